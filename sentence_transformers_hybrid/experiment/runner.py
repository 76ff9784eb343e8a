"""The experiment runner: :func:`run_experiment` and its steps (load the data, train a run, evaluate it), resumable
run by run. Presets live in :mod:`.presets`, what each trains in :mod:`.backbones`, the report in :mod:`.report`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write_json
from ..evaluation.retrieval import SETTINGS
from ..metrics.retrieval import LAREQA_METRICS
from ..data import ParallelCorpus, RetrievalBenchmark, load_lareqa, subsample_benchmark
from .backbones import make_backbone
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
@dataclass
class TrainResult:
    """What :func:`train_run` reports: the training seconds and the sampler configuration it trained with."""

    seconds: float
    sampler_config: dict[str, Any]


def train_model(model, corpus: ParallelCorpus, spec: RunSpec, preset: Preset, output_dir: Path, prompts: dict[str, str],
                resume: bool = True) -> float:
    """Train ``model`` in place with the stock trainer + HybridBatchSampler + MNRL; returns the training seconds."""
    return train_run(model, corpus, spec, preset, output_dir, prompts, resume=resume).seconds


def train_run(model, corpus: ParallelCorpus, spec: RunSpec, preset: Preset, output_dir: Path, prompts: dict[str, str],
              resume: bool = True) -> TrainResult:
    """:func:`train_model`, also returning the sampler configuration (``factory.config()``) for the records."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from ..losses import hybrid_loss
    from ..sampling import HybridBatchSampler

    import transformers

    checkpoints = preset.max_steps >= 500
    # transformers 5 takes the warmup ratio as a float warmup_steps; 4.x has warmup_ratio
    warmup = ({"warmup_steps": float(preset.warmup_ratio)} if int(transformers.__version__.split(".")[0]) >= 5
              else {"warmup_ratio": preset.warmup_ratio})
    sampler = HybridBatchSampler.configure(corpus, mode=spec.mode, alpha=spec.alpha if spec.alpha is not None else 0.5)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        weight_decay=preset.weight_decay,
        **warmup,
        lr_scheduler_type="linear",
        max_steps=preset.max_steps,
        seed=spec.seed,
        bf16=preset.bf16,
        logging_steps=max(1, preset.max_steps // 10),
        save_strategy="steps" if checkpoints else "no",
        save_steps=max(1, preset.max_steps // 5),
        save_total_limit=1,
        report_to="none",
        disable_tqdm=False,
        batch_sampler=sampler,
        prompts={k: v for k, v in prompts.items() if v} or None,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=corpus.to_dataset(), loss=hybrid_loss(model, scale=preset.scale),
        callbacks=[sampler.callback],
    )
    last = None
    if resume and checkpoints and output_dir.is_dir():
        ckpts = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        last = str(ckpts[-1]) if ckpts else None
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    return TrainResult(time.perf_counter() - start, sampler.config())


def evaluate_model(model, bench: RetrievalBenchmark, preset: Preset, name: str, output_path: Path | None = None
                   ) -> dict[str, Any]:
    """LAReQA metrics in the three settings + final-embedding CKA (English vs each language), one flat dict."""
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
    metrics = evaluator(model, output_path=str(output_path) if output_path else None)
    prefix = f"{name}_"
    flat = {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)}
    out: dict[str, Any] = {f"{s}_{m}": flat[f"{s}_{m}"] for s in SETTINGS for m in LAREQA_METRICS if f"{s}_{m}" in flat}
    out["rank_distance"] = flat.get("multi_rank_distance")
    out["pairs"] = evaluator_pairs(evaluator)
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
    """The per-language-pair table of the evaluator as plain rows (for JSON and heatmaps)."""
    results = getattr(evaluator, "results", None)
    if results is None:
        return []
    if hasattr(results, "to_dict"):  # a pandas DataFrame
        return results.to_dict(orient="records")
    return list(results)


# ---------------------------------------------------------------------------------------------- the experiment
#: Preset fields that choose which runs an experiment has, not what a run computes: a finished experiment may be
#: resumed with other values (runs are added; records of runs no longer planned stay on disk, out of the summary).
RUN_SET_FIELDS: tuple[str, ...] = ("modes", "seeds", "alpha_sweep", "sweep_seeds")
#: Preset fields that change no result (text, and what the preset asks of the machine).
_UNCOMPARED_FIELDS: tuple[str, ...] = ("description", "needs_cuda")


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
    out = Path(output_dir)
    config = {
        "preset": preset.to_dict(),
        "data_dir": str(data_dir) if data_dir else os.environ.get("STH_DATA_DIR"),
        "device": device,
        "model_path": model_path,
        "model_fingerprint": _model_fingerprint(model_path),
        "command": command,
        "python": platform.python_version(),
        "runs": [dataclasses.asdict(r) | {"run_id": r.run_id} for r in plan_runs(preset)],
    }
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
    backbone = make_backbone(preset, corpus, bench, out, device, model_path=model_path)

    runs_dir = out / "runs"
    pretrained_file = runs_dir / "pretrained.json"
    if resume and pretrained_file.is_file():
        pretrained = _read_record(pretrained_file)
    else:
        model = backbone.pretrained_model()
        pretrained = evaluate_model(model, bench, preset, name=f"{bench.name}-pretrained")
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
                            resume=resume)
        seconds = trained.seconds
        metrics = evaluate_model(model, bench, preset, name=bench.name)
        record = {"mode": spec.mode, "alpha": spec.alpha, "seed": spec.seed, "run_id": spec.run_id, **metrics,
                  "cka_by_layer": backbone.layer_cka(model), "train_seconds": seconds,
                  "sampler": trained.sampler_config, "config_key": key}
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
    atomic_write_json(out / "results.json", summary)
    atomic_write_json(out / "runs.json", report.runs_json(summary, device=_device_name(device), command=command))
    report.write_report(out, summary)
    return summary


def report_records(out: str | Path, config: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(pretrained, runs)``: the records of the runs ``config`` plans, in its order, for rebuilding a report.

    A planned run without its record, or a record of another configuration (``config_key``), raises naming the file;
    records of runs the configuration no longer plans are left out (with a warning).
    """
    out = Path(out)
    key = config.get("config_key")
    planned = [r["run_id"] for r in config.get("runs", [])]

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


def _model_fingerprint(model_path: str | None) -> str | None:
    """The content fingerprint of a model folder (None for no path, or a Hub id)."""
    if not model_path or not Path(model_path).is_dir():
        return None
    from ..models.frozen import model_fingerprint

    return model_fingerprint(model_path)


def _device_name(device: str | None) -> str:
    """What ran the experiment, in words (GPU name, or the CPU)."""
    import torch

    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def _model_dir(out: Path, spec: RunSpec, preset: Preset) -> Path | None:
    if preset.save_models == "none":
        return None
    main_run = spec.alpha is None or spec.alpha == preset.alpha
    if preset.save_models == "first-seed":
        if spec.seed != preset.seeds[0] or not main_run:
            return None
        return out / "models" / spec.mode
    return out / "models" / spec.run_id
