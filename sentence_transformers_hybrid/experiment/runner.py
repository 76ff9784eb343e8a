"""The experiment runner: :func:`run_experiment` and its steps (load the data, train a run, evaluate it), resumable
run by run. Presets live in :mod:`.presets`, what each trains in :mod:`.backbones`, the report in :mod:`.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write_json
from ..evaluation.retrieval import SETTINGS, setting_metrics
from ..data import ParallelCorpus, RetrievalBenchmark, load_lareqa, subsample_benchmark
from .backbones import make_backbone
from .devices import DeviceSetup, select_device
from .training import train_run
from .presets import Preset, RunSpec, plan_runs, resolve_preset

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- data
def load_data(preset: Preset, data_dir: str | Path | None) -> tuple[ParallelCorpus, RetrievalBenchmark]:
    """The training corpus and the held-out evaluation benchmark of a preset (deterministic subsets)."""
    train = load_lareqa(preset.train, data_dir=data_dir, languages=preset.train_languages)
    evaluation = load_lareqa(preset.eval, data_dir=data_dir, languages=preset.eval_languages)
    if preset.max_eval_questions:
        evaluation = subsample_benchmark(evaluation, preset.max_eval_questions)
    corpus = train.to_parallel_corpus(passage=preset.passage_view)
    if preset.max_train_groups and preset.max_train_groups < len(corpus):
        keep = set(corpus.groups[: preset.max_train_groups])
        corpus = ParallelCorpus.from_records([r for r in corpus.to_records() if r["group"] in keep], name=preset.train)
    return corpus, evaluation


# ---------------------------------------------------------------------------------------------- train / evaluate
def evaluate_model(model, bench: RetrievalBenchmark, preset: Preset, name: str, output_path: Path | None = None,
                   setup: DeviceSetup | None = None) -> dict[str, Any]:
    """LAReQA metrics in the three settings + final-embedding CKA (English vs each language), one flat dict.

    With ``setup`` the encoding runs under its autocast (bf16 where chosen); scores are always computed in float32
    from float32 copies of the embeddings (bf16 scores would tie where float32 ranks).

    The texts are encoded once; the same embeddings are scored plain and language-centered (the post-hoc control,
    :class:`MultilingualRetrievalEvaluator` with ``center_languages=True``): the centered figures go under
    ``"centered"`` (``{mono,cross,multi}_{metric}``, ``rank_distance``, and ``multi_by_language``, its multi rows).
    """
    from ..evaluation import MultilingualRetrievalEvaluator

    evaluator = MultilingualRetrievalEvaluator(
        bench,
        name=name,
        batch_size=preset.eval_batch_size,
        query_prompt=preset.query_prompt or None,
        corpus_prompt=preset.passage_prompt or None,
        candidate_context=preset.candidate_context,
        show_progress_bar=False,
    )
    if output_path is not None:
        output_path.mkdir(parents=True, exist_ok=True)
    with setup.autocast() if setup is not None else contextlib.nullcontext():
        queries, candidates = evaluator.encode(model)  # once: the plain and the centered figures share it
    queries = {lang: e.float() for lang, e in queries.items()}
    candidates = {lang: e.float() for lang, e in candidates.items()}
    flat = evaluator.compute_metrics_from_embeddings(queries, candidates, similarity=model.similarity)
    pairs = evaluator_pairs(evaluator)
    if output_path is not None:
        evaluator.write_results(str(output_path), flat)
    evaluator.store_metrics_in_model_card_data(model, evaluator.prefix_name_to_metrics(flat, name))
    keys = [f"{s}_{m}" for s in SETTINGS for m in setting_metrics(s)]
    out: dict[str, Any] = {k: float(flat[k]) for k in keys if k in flat}
    out["rank_distance"] = flat.get("multi_rank_distance")
    out["pairs"] = pairs
    try:
        centered = evaluator.compute_metrics_from_embeddings(queries, candidates, similarity=model.similarity,
                                                             center_languages=True)
    except ValueError as err:  # e.g. a language of one question: the run keeps its plain figures
        logger.warning("%s: no centered figures: %s", name, err)
        out["centered"] = {"error": str(err)}
    else:
        out["centered"] = {k: float(centered[k]) for k in keys if k in centered}
        out["centered"]["rank_distance"] = centered.get("multi_rank_distance")
        out["centered"]["multi_by_language"] = [r for r in evaluator_pairs(evaluator) if r["setting"] == "multi"]
    with setup.autocast() if setup is not None else contextlib.nullcontext():
        out["cka_en"] = english_cka(model, bench, preset)
    out["cka"] = float(np.mean(list(out["cka_en"].values()))) if out["cka_en"] else None
    return out


def english_cka(model, bench: RetrievalBenchmark, preset: Preset, pivot: str = "en") -> dict[str, float]:
    """Debiased linear CKA of the pivot language's questions vs each other language's, through :class:`CKAEvaluator`
    (each pair on the question ids both languages have)."""
    from ..evaluation.cka import CKAEvaluator

    if pivot not in bench.splits or len(bench.splits) < 2:
        return {}
    evaluator = CKAEvaluator.from_benchmark(bench, alignment="pairwise", name="", prompt=preset.query_prompt or None,
                                            batch_size=preset.eval_batch_size, show_progress_bar=False, write_csv=False)
    metrics = evaluator(model)
    return {lang: float(metrics[f"cka_{min(pivot, lang)}_{max(pivot, lang)}"]) for lang in bench.languages if lang != pivot}


def evaluator_pairs(evaluator) -> list[dict[str, Any]]:
    """The per-language-pair rows of a :class:`MultilingualRetrievalEvaluator` (its ``results``, a list of dicts; for
    JSON and heatmaps); ``[]`` before it has run."""
    return [dict(row) for row in getattr(evaluator, "results", None) or []]


# ---------------------------------------------------------------------------------------------- the experiment
#: Preset fields that choose which runs an experiment has, not what a run computes: a finished experiment may be
#: resumed with other values (runs are added; records of runs no longer planned stay on disk, out of the summary).
RUN_SET_FIELDS: tuple[str, ...] = ("modes", "seeds", "alpha_sweep", "sweep_seeds")
#: Preset fields that change no result (text, and what the preset asks of the machine). ``compile_encoder`` runs the
#: same loss through compiled layers, ``pack_tokens`` on unpadded columns, ``fast_dropout`` with masks from other
#: random draws (float rounding and dropout's random stream differ); each record's ``training_path`` says which ran.
_UNCOMPARED_FIELDS: tuple[str, ...] = ("description", "needs_cuda", "compile_encoder", "pack_tokens", "fast_dropout")


class ExperimentConfigError(ValueError):
    """``output_dir`` holds results of another configuration than the one requested (see :func:`run_experiment`)."""


def _resolved(path: str | Path | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """What every run record of an experiment depends on: the preset (without its run-set fields and text), the
    data folder, the model path and the model folder's content fingerprint. Device, command and Python are left
    out (the same computation on another machine)."""
    preset = {k: v for k, v in (config.get("preset") or {}).items() if k not in RUN_SET_FIELDS + _UNCOMPARED_FIELDS}
    return {
        "preset": json.loads(json.dumps(preset, default=str)),  # tuples and lists compare alike
        "data_dir": _resolved(config.get("data_dir")),
        "model_path": _resolved(config.get("model_path")),
        "model_fingerprint": config.get("model_fingerprint"),
    }


def config_key(config: dict[str, Any]) -> str:
    """A digest of :func:`comparable_config`, stored in ``config.json`` and in every run record."""
    return hashlib.sha256(json.dumps(comparable_config(config), sort_keys=True).encode()).hexdigest()[:16]


def config_differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``["max_steps: stored 30, requested 31", ...]``: the fields in which two experiment configs differ."""
    a, b = comparable_config(stored), comparable_config(requested)
    diffs = []
    for key in ("data_dir", "model_path", "model_fingerprint"):
        if a[key] != b[key]:
            diffs.append(f"{key}: stored {a[key]!r}, requested {b[key]!r}")
    for key in sorted(set(a["preset"]) | set(b["preset"])):
        if a["preset"].get(key, "<not recorded>") != b["preset"].get(key, "<not recorded>"):
            diffs.append(f"preset.{key}: stored {a['preset'].get(key, '<not recorded>')!r}, "
                         f"requested {b['preset'].get(key, '<not recorded>')!r}")
    return diffs


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExperimentConfigError(
            f"{path}: unreadable or corrupt ({err}); delete it to redo that run, or pass overwrite=True "
            "(st-hybrid experiment --overwrite) to rerun the whole experiment"
        ) from None


def _check_resumable(out: Path, config: dict[str, Any], key: str) -> None:
    """Refuse (before any work) an output folder whose records come from another configuration."""
    fix = (f"Use another --output-dir, request the stored configuration, or pass overwrite=True "
           f"(st-hybrid experiment --overwrite) to discard the runs in {out} and rerun")
    stored_file = out / "config.json"
    if stored_file.is_file():
        stored = _read_record(stored_file)
        diffs = config_differences(stored, config)
        if diffs:
            raise ExperimentConfigError(
                f"{stored_file}: the experiment in {out} was run with another configuration; "
                + "; ".join(diffs) + f". {fix}"
            )
    for record in sorted((out / "runs").glob("*.json")) if (out / "runs").is_dir() else []:
        stored_key = _read_record(record).get("config_key")
        if stored_key is not None and stored_key != key:
            raise ExperimentConfigError(
                f"{record}: this run record comes from another configuration (config_key {stored_key}, requested "
                f"{key}). {fix}"
            )


def run_experiment(
    preset: str | Preset = "auto",
    data_dir: str | Path | None = None,
    output_dir: str | Path = "runs/experiment",
    resume: bool = True,
    device: str | None = None,
    model_path: str | None = None,
    command: str | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Run a preset end to end; returns the summary written to ``output_dir/results.json``.

    Each finished run is written to ``output_dir/runs/<run_id>.json`` before the next starts; with ``resume=True``
    (default) a rerun skips finished runs, so an interrupted experiment continues from the last finished run.

    An output folder belongs to one configuration: the preset's fields, ``data_dir``, ``model_path`` and the model
    folder's content (:func:`comparable_config`; not the device or the command). If ``output_dir`` holds a
    ``config.json`` or run records of another configuration, :class:`ExperimentConfigError` names the differing
    fields before any work, with ``resume`` on or off. The run set may change: other ``seeds``, ``modes``,
    ``alpha_sweep`` or ``sweep_seeds`` reuse the finished runs still planned and train the new ones (the summary
    holds the planned runs only). ``overwrite=True`` deletes ``runs/``, ``checkpoints/``, ``models/``,
    ``results.json`` and ``runs.json`` first and reruns everything under the requested configuration.
    """
    from . import report

    preset = resolve_preset(preset, device=device, **overrides)
    if preset.name == "beyond":
        raise ValueError("the beyond preset has its own protocol (dev selection, then the test): run it with "
                         "sentence_transformers_hybrid.experiment.beyond.run_beyond or st-hybrid experiment --preset beyond")
    config, train_setup, encode_setup = experiment_config(preset, data_dir, device, model_path, command)
    config["runs"] = [dataclasses.asdict(r) | {"run_id": r.run_id} for r in plan_runs(preset)]
    out = Path(output_dir)
    key = config["config_key"] = config_key(config)
    if overwrite:
        for sub in ("runs", "checkpoints", "models"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for record in ("results.json", "runs.json"):  # no summary of the discarded runs outlives them
            (out / record).unlink(missing_ok=True)
    elif out.is_dir():
        _check_resumable(out, config, key)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config)
    corpus, bench = load_data(preset, data_dir)
    logger.info("training corpus: %r; evaluation: %r", corpus, bench)
    # the frozen encoder's cache is encoded here, under the same precision as every other encoding pass
    backbone = make_backbone(preset, corpus, bench, out, device, model_path=model_path, encode_dtype=encode_setup.dtype)

    runs_dir = out / "runs"
    pretrained_file = runs_dir / "pretrained.json"
    if resume and pretrained_file.is_file():
        pretrained = _read_record(pretrained_file)
    else:
        model = backbone.pretrained_model()
        pretrained = evaluate_model(model, bench, preset, name=f"{bench.name}-pretrained", setup=encode_setup)
        with encode_setup.autocast():
            pretrained["cka_by_layer"] = backbone.layer_cka(model)
        pretrained["config_key"] = key
        atomic_write_json(pretrained_file, pretrained)

    results = []
    for spec in plan_runs(preset):
        run_file = runs_dir / f"{spec.run_id}.json"
        if resume and run_file.is_file():
            results.append(_read_record(run_file))
            continue
        logger.info("run %s", spec.run_id)
        model = backbone.new_model(spec.seed)
        trained = train_run(model, corpus, spec, preset, out / "checkpoints" / spec.run_id, backbone.prompts(),
                            resume=resume, setup=train_setup)
        seconds = trained.seconds
        model.eval()
        metrics = evaluate_model(model, bench, preset, name=bench.name, setup=encode_setup)
        with encode_setup.autocast():
            cka_by_layer = backbone.layer_cka(model)
        record = {"mode": spec.mode, "alpha": spec.alpha, "seed": spec.seed, "run_id": spec.run_id, **metrics,
                  "cka_by_layer": cka_by_layer, "train_seconds": seconds, "resumed_from": trained.resumed_from,
                  "device": train_setup.describe(), "load_average": load_average(),
                  "sampler": trained.sampler_config, "training_path": trained.training_path,
                  "loss_curve": trained.loss_curve, "config_key": key}
        model_dir = _model_dir(out, spec, preset)
        if model_dir is not None:
            if model_dir.exists():
                shutil.rmtree(model_dir)
            backbone.save(model, model_dir)
            report.write_model_card(model_dir, preset, spec, record, corpus, bench, sampler_config=trained.sampler_config)
            record["model_dir"] = str(model_dir)
        atomic_write_json(run_file, record)
        shutil.rmtree(out / "checkpoints" / spec.run_id, ignore_errors=True)
        results.append(record)

    if (out / "checkpoints").is_dir() and not any((out / "checkpoints").iterdir()):
        (out / "checkpoints").rmdir()
    summary = report.summarise(preset, pretrained, results)
    summary["config"] = config
    report.write_outputs(out, summary, device=train_setup.describe(), command=command)
    return summary


def report_records(
    out: str | Path, config: dict[str, Any], partial: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(pretrained, runs)``: the records of the runs ``config`` plans, in its order, for rebuilding a report.

    A planned run without its record raises naming the file, unless ``partial=True``: then the runs finished so far
    are returned (:func:`missing_runs` names the others; the pretrained model's record is always needed). A record
    of another configuration (``config_key``) raises naming the file; records of runs the configuration no longer
    plans are left out (with a warning).
    """
    out = Path(out)
    key = config.get("config_key")
    planned = [r["run_id"] for r in config.get("runs", [])]
    if partial:
        missing = set(missing_runs(out, config))  # one scan of runs/, not one per planned run
        planned = [name for name in planned if name not in missing]

    def load(name: str) -> dict[str, Any]:
        path = out / "runs" / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: run {name!r} of {out / 'config.json'} has no record; rerun "
                                    f"st-hybrid experiment with --output-dir {out} to finish it")
        record = _read_record(path)
        if key is not None and record.get("config_key") not in (None, key):
            raise ExperimentConfigError(f"{path}: record of another configuration (config_key "
                                        f"{record.get('config_key')}, config.json has {key})")
        return record

    extra = sorted(p.stem for p in (out / "runs").glob("*.json") if p.stem != "pretrained" and p.stem not in planned)
    if extra:
        logger.warning("%s: records of runs not planned by config.json left out of the report: %s", out / "runs", extra)
    return load("pretrained"), [load(name) for name in planned]


def missing_runs(out: str | Path, config: dict[str, Any]) -> list[str]:
    """The run ids ``config`` plans that have no record in ``out/runs`` yet, in plan order.

    Example::

        >>> from pathlib import Path
        >>> from sentence_transformers_hybrid.experiment.runner import missing_runs
        >>> (Path("exp") / "runs").mkdir(parents=True)
        >>> _ = (Path("exp") / "runs" / "mono-s0.json").write_text("{}")
        >>> missing_runs("exp", {"runs": [{"run_id": "mono-s0"}, {"run_id": "cross-s0"}, {"run_id": "hybrid-a0.5-s0"}]})
        ['cross-s0', 'hybrid-a0.5-s0']
    """
    return [r["run_id"] for r in config.get("runs", []) if not (Path(out) / "runs" / f"{r['run_id']}.json").is_file()]


def experiment_config(preset: Preset, data_dir: str | Path | None, device: str | None, model_path: str | None,
                      command: str | None) -> tuple[dict[str, Any], DeviceSetup, DeviceSetup]:
    """``(config, train setup, encode setup)``: what every experiment's ``config.json`` records of its preset, data,
    device and model (the caller adds its runs), and the device setups the preset's precisions give there."""
    setup = select_device(device, prefer_bf16="auto" in (preset.bf16, preset.encode_dtype))
    train_setup, encode_setup = setup.with_dtype(preset.bf16), setup.with_dtype(preset.encode_dtype)
    config = {
        "preset": preset.to_dict(),
        "data_dir": str(data_dir) if data_dir else os.environ.get("STH_DATA_DIR"),
        "device": device,
        "device_setup": {"train": train_setup.to_dict(), "encode": encode_setup.to_dict()},
        "model_path": model_path,
        "model_fingerprint": model_folder_fingerprint(model_path),
        "command": command,
        "python": platform.python_version(),
    }
    return config, train_setup, encode_setup


def model_folder_fingerprint(model_path: str | None) -> str | None:
    """The content fingerprint of a model folder (None for no path, or a Hub id)."""
    if not model_path or not Path(model_path).is_dir():
        return None
    from ..models.frozen import model_fingerprint

    return model_fingerprint(model_path)


def load_average() -> list[float] | None:
    """The 1/5/15-minute load average when a run ends (its train_seconds are honest only on idle cores)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def _model_dir(out: Path, spec: RunSpec, preset: Preset) -> Path | None:
    if preset.save_models == "none":
        return None
    main_run = spec.alpha is None or spec.alpha == preset.alpha
    if preset.save_models == "first-seed":
        if spec.seed != preset.seeds[0] or not main_run:
            return None
        return out / "models" / spec.mode
    return out / "models" / spec.run_id
