"""An experiment's report: ``results.json``, ``runs.json``, ``results.md`` with its plots, and the model cards.

The writing and its order; the parts live by job:

* :mod:`.stats`: the typed run record (:class:`~.stats.RunRecord`) and mode summary (:class:`~.stats.ModeSummary`),
  mean ± sd over seeds (:func:`~.stats.mean_sd`: a figure some seeds lack is an error naming the runs);
* :mod:`.claims`: the paper's claims as pure verdict functions and :func:`~.claims.check_claims`;
* :mod:`.tables`: the Markdown tables; :mod:`.plots`: the PNG plots.

Here: :func:`summarise` (the summary written to ``results.json``), :func:`runs_json`, :func:`write_report`,
:func:`write_outputs` (all of them, for ``st-hybrid experiment`` and ``st-hybrid report``), :func:`model_index`
and :func:`write_model_card`. The names that lived here before the split (``check_claims``, ``results_table``,
``bias_table``, ``Stat``, ...) are still importable from this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import atomic_write_json, atomic_write_text
from ..evaluation.retrieval import SETTINGS, pair_matrix
from ..sampling.factory import write_sampler_config
from ..sampling.modes import alpha_record
from .claims import check_claims
from .plots import bias_points, plot_alpha_sweep, plot_bias_scatter, plot_cka_by_layer, plot_matrix
from .stats import (
    MODE_LABELS,
    MODELS,
    RunRecord,
    Stat,
    format_value,
    model_label,
    model_stat,
    nest,
    pooled_sd,
    summarise_mode,
    summary_models,
)
from .tables import (
    bias_table,
    centered_table,
    claims_table,
    language_table,
    partial_note,
    results_table,
    runs_table,
    sweep_table,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..data import ParallelCorpus, RetrievalBenchmark
    from .presets import Preset, RunSpec

__all__ = [
    # written here
    "RUN_KEYS", "model_index", "runs_json", "summarise", "write_model_card", "write_outputs", "write_report",
    # re-exported from .stats, .claims, .tables, .plots and evaluation.retrieval (their names before the split)
    "MODELS", "MODE_LABELS", "Stat", "bias_points", "bias_table", "centered_table", "check_claims", "claims_table",
    "language_table", "model_stat", "nest", "pair_matrix", "partial_note", "plot_alpha_sweep", "plot_bias_scatter",
    "plot_cka_by_layer", "pooled_sd", "results_table", "runs_table", "sweep_table",
]


def summarise(preset: Preset, pretrained: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """results.json: ``mode -> setting -> metric`` (mean over seeds, with ``*_sd`` and ``n_seeds``:
    :func:`~.stats.summarise_mode`), plus the pretrained model, the alpha sweep, every run record (without its
    per-pair table) and the claims (:func:`~.claims.check_claims`).

    A figure that some runs of a mode hold and others lack raises :class:`~.stats.MissingFigureError` naming them:
    its mean would otherwise cover fewer seeds than ``n_seeds`` says.
    """
    summary: dict[str, Any] = {"preset": preset.name, "description": preset.description, "pretrained": nest(pretrained)}
    main = [r for r in runs if r["alpha"] is None or r["alpha"] == preset.alpha]
    for mode in preset.modes:
        rs = [RunRecord.from_dict(r) for r in main if r["mode"] == mode]
        if rs:
            summary[mode] = summarise_mode(mode, rs, preset.alpha if mode == "hybrid" else None).to_dict()
    sweep = [r for r in runs if r["mode"] == "hybrid"]
    summary["alpha_sweep"] = sorted(
        ({"alpha": r["alpha"], "seed": r["seed"], **{f"{s}_map@20": r[f"{s}_map@20"] for s in SETTINGS},
          "rank_distance": r["rank_distance"], "cka": r.get("cka")} for r in sweep if r["seed"] in preset.sweep_seeds),
        key=lambda d: d["alpha"],
    )
    summary["runs"] = [{k: v for k, v in r.items() if k != "pairs"} for r in runs]
    summary["claims"] = check_claims(summary)
    return summary


RUN_KEYS = ("mode", "alpha", "seed", "mono_map@20", "cross_map@20", "multi_map@20", "rank_distance", "cka_by_layer",
            "train_seconds")


def runs_json(summary: dict[str, Any], device: str, command: str | None = None) -> dict[str, Any]:
    """The compact record of an experiment (``runs.json``): ``{"device", "command", "config", "pretrained",
    "runs": [{mode, alpha, seed, mono/cross/multi map@20, rank_distance, cka_by_layer, train_seconds}]}``."""
    pretrained = summary.get("pretrained") or {}
    flat_pretrained = {f"{s}_map@20": pretrained.get(s, {}).get("map@20") for s in SETTINGS}
    flat_pretrained.update(rank_distance=pretrained.get("rank_distance"), cka_by_layer=pretrained.get("cka_by_layer"))
    config = summary.get("config") or {}
    record = {
        "device": device,
        "command": command if command is not None else config.get("command"),
        "config": config,
        "pretrained": flat_pretrained,
        "runs": [{k: r.get(k) for k in RUN_KEYS} for r in summary.get("runs", [])],
    }
    if summary.get("partial"):  # st-hybrid report --partial: which planned runs have not finished
        record["partial"] = summary["partial"]
    return record


def write_outputs(out: str | Path, summary: dict[str, Any], device: str, command: str | None = None) -> list[str]:
    """Write an experiment's outputs from its ``summary``: ``results.json``, ``runs.json`` (:func:`runs_json`) and
    the report with its plots (:func:`write_report`); returns the paths written. Shared by ``st-hybrid experiment``
    and ``st-hybrid report``, so both write the same files. ``summary`` is :func:`summarise`'s; the report reads
    each mode's first run's per-pair table from ``out/runs/<run_id>.json`` (its ``pairs``, when there are any).

    Example:
        >>> import json, pathlib
        >>> from sentence_transformers_hybrid.experiment import PRESETS
        >>> def record(mode, seed):   # what runs/<run_id>.json holds, less its per-pair table
        ...     return {"run_id": f"{mode}-s{seed}", "mode": mode, "seed": seed, "alpha": None, "cka": 0.7,
        ...             "mono_map@20": 0.5 + seed / 100, "cross_map@20": 0.4, "multi_map@20": 0.3,
        ...             "rank_distance": 90.0, "train_seconds": 60.0}
        >>> runs = [record("mono", 0), record("mono", 1)]
        >>> for r in runs:
        ...     _ = (pathlib.Path("exp/runs") / f"{r['run_id']}.json").parent.mkdir(parents=True, exist_ok=True)
        ...     _ = (pathlib.Path("exp/runs") / f"{r['run_id']}.json").write_text(json.dumps(r))
        >>> summary = summarise(PRESETS["smoke"], {"mono_map@20": 0.4, "rank_distance": 200.0}, runs)
        >>> [pathlib.Path(p).name for p in write_outputs("exp", summary, device="cpu")]
        ['results.json', 'runs.json', 'results.md', 'bias_scatter.png']
        >>> print(results_table(summary).splitlines()[-1])
        | X-X-mono | 0.505 ± 0.007 | 0.400 ± 0.000 | 0.300 ± 0.000 | 90.0 ± 0.0 | 0.700 ± 0.000 | 2 |
    """
    out = Path(out)
    atomic_write_json(out / "results.json", summary)
    atomic_write_json(out / "runs.json", runs_json(summary, device=device, command=command))
    return [str(out / "results.json"), str(out / "runs.json"), *write_report(out, summary)]


def write_report(out: str | Path, summary: dict[str, Any]) -> list[str]:
    """Write ``results.md`` and the PNG plots into ``out``; returns the files written."""
    out = Path(out)
    written = []
    runs = summary.get("runs", [])
    # per-pair heatmaps from the first seed of each main mode (pairs live in runs/<id>.json)
    for mode in ("mono", "cross", "hybrid"):
        rs = [r for r in runs if r["mode"] == mode and (r["alpha"] is None or r["alpha"] == summary.get(mode, {}).get("alpha"))]
        if not rs:
            continue
        full = json.loads((out / "runs" / f"{rs[0]['run_id']}.json").read_text(encoding="utf-8"))
        if full.get("pairs"):
            q, c, mat = pair_matrix(full["pairs"])
            written.append(plot_matrix(mat, q, c, f"{MODE_LABELS[mode]}: mAP@20 per language pair (seed {rs[0]['seed']})",
                                       out / f"map_pairs_{mode}.png", xlabel="candidate pool", ylabel="query language"))
    langs = sorted({lang for m in ("mono", "cross", "hybrid") for r in runs if r["mode"] == m for lang in (r.get("cka_en") or {})})
    if langs:
        rows, mat = [], []
        for m in ("pretrained", "mono", "cross", "hybrid"):
            src = summary.get("pretrained") if m == "pretrained" else next((r for r in runs if r["mode"] == m), None)
            if src and src.get("cka_en"):
                rows.append(MODE_LABELS.get(m, m))
                mat.append([src["cka_en"].get(lang, np.nan) for lang in langs])
        written.append(plot_matrix(np.asarray(mat), rows, langs, "linear CKA (debiased), English vs X questions",
                                   out / "cka_en_vs_x.png", xlabel="language X", vmin=None))
    for fn, name in ((plot_alpha_sweep, "alpha_sweep.png"), (plot_cka_by_layer, "cka_by_layer.png"),
                     (plot_bias_scatter, "bias_scatter.png")):
        p = fn(summary, out / name)
        if p:
            written.append(p)
    note = partial_note(summary)
    title = f"# Results: `{summary['preset']}` preset"
    if note:
        done, missing = len(summary["partial"]["finished"]), len(summary["partial"]["missing"])
        title += f" — PARTIAL ({done} of {done + missing} runs)"
    md = [title, "", *([note, ""] if note else []), summary.get("description", ""), "",
          "Mean ± sd over seeds. mAP@20 in the LAReQA protocol (macro-averaged over language pairs); rank distance "
          "= language bias in the multilingual pool (lower is better); CKA = debiased linear CKA between English "
          "questions and the same questions in each other language (mean over languages).", "",
          results_table(summary), ""]
    md += ["## Language bias, three ways", "",
           "Multilingual pool (the candidates of every language). Rank distance: per query, rank of the lowest-ranked "
           "of its relevant answers minus that of the highest-ranked one; same-language share @20: the share of a "
           "query's 20 best candidates in its own language (mean over a language's queries, then over languages); "
           "multi mAP over the full ranking next to mAP@20.", "", bias_table(summary), ""]
    md += ["## The post-hoc control: language centering", "",
           "Every model again, scored on the same embeddings with each language's mean question (candidate) "
           "embedding removed from its questions (candidates), then re-normalised: no training. "
           "The plot shows each model's move (arrow) from plain to centered.", "", centered_table(summary), ""]
    scatter = [p for p in written if Path(p).name == "bias_scatter.png"]
    md += [f"![bias_scatter]({Path(p).name})" for p in scatter] + ([""] if scatter else [])
    by_language = _pairs_by_model(out, summary)
    if by_language:
        md += ["## Multi setting by query language", "",
               "First seed of each mode; which query languages the bias hurts.", "", language_table(by_language), ""]
    md += ["## The paper's claims, as measured", "",
           "Each claim is a difference in the claimed direction (positive = as claimed) between two rows of the tables "
           "above (mean over seeds), on mAP@20 or the rank distance; margin = difference / pooled sd of the two rows "
           "(sd over seeds). With one seed the margin is not defined and the verdict is the sign of the raw "
           "difference. Stated as measured; no setting was chosen for its verdict.", "", claims_table(summary), "",
           *[f"- **{c['claim']}**: {c['definition']}." for c in check_claims(summary)], ""]
    sweep = sweep_table(summary)
    if sweep:
        md += ["## Alpha sweep", "", sweep, ""]
    timing = runs_table(summary)
    if timing:
        md += ["## Training runs", "", "Wall time of each run's training (evaluation not included), with the load "
               "average when it ended: a time is honest only when nothing else shared the cores.", "", timing, ""]
    cmd = (summary.get("config") or {}).get("command")
    if cmd:
        md += ["Command:", "", "```", cmd, "```", ""]
    md += [f"![{Path(p).stem}]({Path(p).name})" for p in written if p not in scatter]
    atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    return [str(out / "results.md"), *written]


def _pairs_by_model(out: Path, summary: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The evaluator rows of the pretrained model and of each mode's first seed, read from ``out/runs``."""
    found: dict[str, list[dict[str, Any]]] = {}
    runs = summary.get("runs", [])
    for m in summary_models(summary):
        if m == "pretrained":
            path = out / "runs" / "pretrained.json"
        else:
            alpha = (summary.get(m) or {}).get("alpha")
            rs = [r for r in runs if r["mode"] == m and (r["alpha"] is None or r["alpha"] == alpha)]
            if not rs:
                continue
            path = out / "runs" / f"{rs[0]['run_id']}.json"
        if path.is_file():
            pairs = json.loads(path.read_text(encoding="utf-8")).get("pairs") or []
            if pairs:
                found[model_label(summary, m)] = pairs
    return found


# ------------------------------------------------------------------------------------------- model cards
def model_index(model_name: str, dataset_name: str, dataset_type: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The Hub's ``model-index`` block (results shown on the model page)."""
    metrics = []
    for s in SETTINGS:
        for m in ("map@20", "recall@10", "ndcg@10", "mrr@10"):
            key = f"{s}_{m}"
            if record.get(key) is not None:
                metrics.append({"type": f"{s}_{m.replace('@', '_at_')}", "value": round(float(record[key]), 4),
                                "name": f"{s.capitalize()} {m.replace('@', '@')}"})
    if record.get("rank_distance") is not None:
        metrics.append({"type": "multi_rank_distance", "value": round(float(record["rank_distance"]), 2),
                        "name": "Multi rank distance (language bias)"})
    return [{"name": model_name, "results": [{"task": {"type": "retrieval", "name": "Multilingual answer retrieval"},
                                              "dataset": {"name": dataset_name, "type": dataset_type, "split": "test"},
                                              "metrics": metrics}]}]


def write_model_card(model_dir: str | Path, preset: Preset, spec: RunSpec, record: dict[str, Any],
                     corpus: ParallelCorpus, bench: RetrievalBenchmark, sampler_config: dict[str, Any] | None = None) -> str:
    """Write README.md (Hub model card) that names HybridBatchSampler, its mode, alpha, seed, data and results."""
    import yaml

    model_dir = Path(model_dir)
    name = f"{preset.backbone}-{spec.run_id}"
    front = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["sentence-transformers", "sentence-similarity", "multilingual", "hybrid-batch-training",
                 "sentence-transformers-hybrid"],
        "language": sorted(set(corpus.languages) | set(bench.languages)),
        "model-index": model_index(name, bench.name.upper(), bench.name, record),
    }
    if sampler_config is None:  # the run's own record is the trainer's; this is what a card without it can say
        sampler_config = {"mode": spec.mode, **alpha_record(spec.alpha), "seed": spec.seed,
                          "batch_size": preset.batch_size, "languages": corpus.languages, "sources": corpus.sources}
    write_sampler_config(model_dir, sampler_config)
    rows = "\n".join(
        f"| {s} | {format_value(record.get(f'{s}_map@20'))} | {format_value(record.get(f'{s}_recall@10'))} | "
        f"{format_value(record.get(f'{s}_ndcg@10'))} | {format_value(record.get(f'{s}_rank_distance'), digits=1)} |"
        for s in SETTINGS
    )
    body = f"""# {name}

A multilingual retriever trained with **`HybridBatchSampler`** from
[sentence-transformers-hybrid](https://pypi.org/project/sentence-transformers-hybrid/) (Elmahdy et al., EMNLP 2024).

## Training
- Sampler: `HybridBatchSampler`, mode **`{spec.mode}`** ({MODE_LABELS.get(spec.mode, spec.mode)} batches)"""
    body += f", alpha = {spec.alpha:g}" if spec.alpha is not None else ""
    body += f""", seed = {spec.seed}
- Loss: `MultipleNegativesRankingLoss` (cosine similarity, scale {preset.scale:g}, in-batch negatives)
- Backbone: `{preset.backbone}`{" (frozen encoder; only a linear head is trained)" if preset.backbone == "e5-frozen" else ""}
- Data: {preset.train.upper()} question → answer-sentence pairs, {len(corpus):,} groups in {len(corpus.languages)}
  languages ({", ".join(corpus.languages)}); {corpus.num_rows:,} rows
- Hyper-parameters: batch {preset.batch_size}, {preset.max_steps} steps, learning rate {preset.learning_rate:g},
  weight decay {preset.weight_decay:g}, warmup ratio {preset.warmup_ratio:g}, prompts `{preset.query_prompt!r}` /
  `{preset.passage_prompt!r}`
- Preset: `{preset.name}` — {preset.description}

The full sampler configuration is in `hybrid_sampler_config.json`.

## Evaluation (zero-shot, {bench.name.upper()}, LAReQA protocol)
| setting | mAP@20 | Recall@10 | nDCG@10 | rank distance |
|---|---|---|---|---|
{rows}

Multilingual rank distance (language bias, lower is better): {format_value(record.get("rank_distance"), digits=1)}.
Debiased linear CKA, English vs other-language questions: {format_value(record.get("cka"))}.

## Usage
```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{model_dir.name}")
q = model.encode(["Who wrote Faust?"], prompt={preset.query_prompt!r})
p = model.encode(["Goethe schrieb Faust."], prompt={preset.passage_prompt!r})
```

## Limitations and licences
Trained on {preset.train.upper()} ({"CC BY-SA 4.0" if preset.train == "xquad-r" else "CC BY-NC 4.0"}), evaluated on
{bench.name.upper()} ({"CC BY-NC 4.0" if bench.name == "mlqa-r" else "CC BY-SA 4.0"}). Small training data: the numbers
show the effect of the batch type, not a production retriever.
"""
    text = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body
    atomic_write_text(model_dir / "README.md", text)
    return str(model_dir / "README.md")
