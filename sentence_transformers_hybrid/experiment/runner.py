"""The experiment runner: :func:`run_experiment` and its steps (load the data, train a run, evaluate it), resumable
run by run. Presets live in :mod:`.presets`, what each trains in :mod:`.backbones`, the report in :mod:`.report`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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
from ..evaluation.retrieval import SETTINGS, setting_metrics
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
    """LAReQA metrics in the three settings + final-embedding CKA (English vs each language), one flat dict.

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
    queries, candidates = evaluator.encode(model)  # once: the plain and the centered figures share it
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
def run_experiment(
    preset: str | Preset = "auto",
    data_dir: str | Path | None = None,
    output_dir: str | Path = "runs/experiment",
    resume: bool = True,
    device: str | None = None,
    model_path: str | None = None,
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run a preset end to end; returns the summary written to ``output_dir/results.json``.

    Each finished run is written to ``output_dir/runs/<run_id>.json`` before the next starts; with ``resume=True``
    (default) a rerun skips finished runs, so an interrupted experiment continues from the last finished run.
    """
    from . import report

    preset = resolve_preset(preset, device=device, **overrides)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "preset": preset.to_dict(),
        "data_dir": str(data_dir) if data_dir else os.environ.get("STH_DATA_DIR"),
        "device": device,
        "model_path": model_path,
        "command": command,
        "python": platform.python_version(),
        "runs": [dataclasses.asdict(r) | {"run_id": r.run_id} for r in plan_runs(preset)],
    }
    atomic_write_json(out / "config.json", config)
    corpus, bench = load_data(preset, data_dir)
    logger.info("training corpus: %r; evaluation: %r", corpus, bench)
    backbone = make_backbone(preset, corpus, bench, out, device, model_path=model_path)

    runs_dir = out / "runs"
    pretrained_file = runs_dir / "pretrained.json"
    if resume and pretrained_file.is_file():
        pretrained = json.loads(pretrained_file.read_text(encoding="utf-8"))
    else:
        model = backbone.pretrained_model()
        pretrained = evaluate_model(model, bench, preset, name=f"{bench.name}-pretrained")
        pretrained["cka_by_layer"] = backbone.layer_cka(model)
        atomic_write_json(pretrained_file, pretrained)

    results = []
    for spec in plan_runs(preset):
        run_file = runs_dir / f"{spec.run_id}.json"
        if resume and run_file.is_file():
            results.append(json.loads(run_file.read_text(encoding="utf-8")))
            continue
        logger.info("run %s", spec.run_id)
        model = backbone.new_model(spec.seed)
        trained = train_run(model, corpus, spec, preset, out / "checkpoints" / spec.run_id, backbone.prompts(),
                            resume=resume)
        seconds = trained.seconds
        metrics = evaluate_model(model, bench, preset, name=bench.name)
        record = {"mode": spec.mode, "alpha": spec.alpha, "seed": spec.seed, "run_id": spec.run_id, **metrics,
                  "cka_by_layer": backbone.layer_cka(model), "train_seconds": seconds}
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
