"""Results tables, plots and model cards of an experiment (pure functions of the run records; no training)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import atomic_write_text
from ..evaluation.retrieval import SETTINGS
from ..metrics.retrieval import LAREQA_METRICS
from ..sampling.modes import PAPER_NAMES
from ..sampling.trainer import write_sampler_config

if TYPE_CHECKING:  # pragma: no cover
    from ..data import ParallelCorpus, RetrievalBenchmark
    from .presets import Preset, RunSpec

METRICS = LAREQA_METRICS
MODE_LABELS = PAPER_NAMES


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def nest(record: dict[str, Any]) -> dict[str, Any]:
    """``{"mono_map@20": x, ...}`` -> ``{"mono": {"map@20": x, ...}, ..., "rank_distance", "cka"}``."""
    out: dict[str, Any] = {s: {m: record[f"{s}_{m}"] for m in METRICS if f"{s}_{m}" in record} for s in SETTINGS}
    out["rank_distance"] = record.get("rank_distance")
    out["cka"] = record.get("cka")
    out["cka_en"] = record.get("cka_en")
    out["cka_by_layer"] = record.get("cka_by_layer")
    return out


def summarise(preset: Preset, pretrained: dict[str, Any], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """results.json: ``mode -> setting -> metric`` (mean over seeds, with ``*_sd`` and ``n_seeds``), plus the
    pretrained model, the alpha sweep and every run record (without its per-pair table)."""
    summary: dict[str, Any] = {"preset": preset.name, "description": preset.description, "pretrained": nest(pretrained)}
    main = [r for r in runs if r["alpha"] is None or r["alpha"] == preset.alpha]
    for mode in preset.modes:
        rs = [r for r in main if r["mode"] == mode]
        if not rs:
            continue
        entry: dict[str, Any] = {"n_seeds": len(rs), "seeds": [r["seed"] for r in rs]}
        if mode == "hybrid":
            entry["alpha"] = preset.alpha
        for s in SETTINGS:
            entry[s] = {}
            for m in METRICS:
                key = f"{s}_{m}"
                if key in rs[0]:
                    mean, sd = _mean_sd([r[key] for r in rs])
                    entry[s][m], entry[s][f"{m}_sd"] = mean, sd
        for key in ("rank_distance", "cka", "train_seconds"):
            mean, sd = _mean_sd([r.get(key) for r in rs])
            entry[key], entry[f"{key}_sd"] = mean, sd
        layers = [r["cka_by_layer"] for r in rs if r.get("cka_by_layer")]
        if layers:
            entry["cka_by_layer"] = np.mean(np.asarray(layers, dtype=np.float64), axis=0).tolist()
        summary[mode] = entry
    sweep = [r for r in runs if r["mode"] == "hybrid"]
    summary["alpha_sweep"] = sorted(
        ({"alpha": r["alpha"], "seed": r["seed"], **{f"{s}_map@20": r[f"{s}_map@20"] for s in SETTINGS},
          "rank_distance": r["rank_distance"], "cka": r.get("cka")} for r in sweep if r["seed"] in preset.sweep_seeds),
        key=lambda d: d["alpha"],
    )
    summary["runs"] = [{k: v for k, v in r.items() if k != "pairs"} for r in runs]
    return summary


def _fmt(mean: float | None, sd: float | None = None, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    if sd is None or np.isnan(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def results_table(summary: dict[str, Any], modes: Sequence[str] = ("mono", "cross", "hybrid")) -> str:
    """The paper-style Markdown table: rows = modes, columns = Mono / Cross / Multi mAP@20, rank distance, CKA."""
    lines = [
        "| Model | Mono mAP@20 | Cross mAP@20 | Multi mAP@20 | Rank distance ↓ | CKA (en vs X) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    p = summary.get("pretrained")
    if p:
        lines.append(
            f"| pretrained | {_fmt(p['mono'].get('map@20'))} | {_fmt(p['cross'].get('map@20'))} | "
            f"{_fmt(p['multi'].get('map@20'))} | {_fmt(p.get('rank_distance'), digits=1)} | {_fmt(p.get('cka'))} | – |"
        )
    for mode in modes:
        e = summary.get(mode)
        if not e:
            continue
        label = MODE_LABELS.get(mode, mode) + (f" (α={e['alpha']:g})" if "alpha" in e else "")
        lines.append(
            f"| {label} | {_fmt(e['mono']['map@20'], e['mono']['map@20_sd'])} | "
            f"{_fmt(e['cross']['map@20'], e['cross']['map@20_sd'])} | "
            f"{_fmt(e['multi']['map@20'], e['multi']['map@20_sd'])} | "
            f"{_fmt(e['rank_distance'], e['rank_distance_sd'], digits=1)} | {_fmt(e['cka'], e['cka_sd'])} | "
            f"{e['n_seeds']} |"
        )
    return "\n".join(lines)


def sweep_table(summary: dict[str, Any]) -> str:
    rows = summary.get("alpha_sweep") or []
    if not rows:
        return ""
    lines = ["| α | seed | Mono mAP@20 | Cross mAP@20 | Multi mAP@20 | Rank distance | CKA |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['alpha']:g} | {r['seed']} | {_fmt(r['mono_map@20'])} | {_fmt(r['cross_map@20'])} | "
            f"{_fmt(r['multi_map@20'])} | {_fmt(r['rank_distance'], digits=1)} | {_fmt(r.get('cka'))} |"
        )
    return "\n".join(lines)


RUN_KEYS = ("mode", "alpha", "seed", "mono_map@20", "cross_map@20", "multi_map@20", "rank_distance", "cka_by_layer",
            "train_seconds")


def runs_json(summary: dict[str, Any], device: str, command: str | None = None) -> dict[str, Any]:
    """The compact record of an experiment (``runs.json``): ``{"device", "command", "config", "pretrained",
    "runs": [{mode, alpha, seed, mono/cross/multi map@20, rank_distance, cka_by_layer, train_seconds}]}``."""
    pretrained = summary.get("pretrained") or {}
    flat_pretrained = {f"{s}_map@20": pretrained.get(s, {}).get("map@20") for s in SETTINGS}
    flat_pretrained.update(rank_distance=pretrained.get("rank_distance"), cka_by_layer=pretrained.get("cka_by_layer"))
    config = summary.get("config") or {}
    return {
        "device": device,
        "command": command if command is not None else config.get("command"),
        "config": config,
        "pretrained": flat_pretrained,
        "runs": [{k: r.get(k) for k in RUN_KEYS} for r in summary.get("runs", [])],
    }


# ------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pair_matrix(pairs: Sequence[dict[str, Any]], metric: str = "map@20") -> tuple[list[str], list[str], np.ndarray]:
    """Per-language-pair rows -> (query languages, pool labels, matrix); the multilingual pool is the last column."""
    qs = sorted({r["query_language"] for r in pairs})
    cs = sorted({r["corpus_language"] for r in pairs if r["corpus_language"] != "all"})
    if any(r["corpus_language"] == "all" for r in pairs):
        cs.append("all")
    mat = np.full((len(qs), len(cs)), np.nan)
    for r in pairs:
        mat[qs.index(r["query_language"]), cs.index(r["corpus_language"])] = r[metric]
    return qs, cs, mat


def plot_heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, path: str | Path,
                 xlabel: str = "", ylabel: str = "", fmt: str = ".2f", vmin: float | None = 0.0,
                 vmax: float | None = None) -> str:
    """A labelled heatmap PNG (values written in the cells)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.6 * len(cols) + 2.5, 0.5 * len(rows) + 1.8))
    im = ax.imshow(matrix, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if not np.isnan(matrix[i, j]):
                ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] < np.nanmean(matrix) else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_alpha_sweep(summary: dict[str, Any], path: str | Path) -> str | None:
    rows = summary.get("alpha_sweep") or []
    if len({r["alpha"] for r in rows}) < 2:
        return None
    plt = _plt()
    alphas = sorted({r["alpha"] for r in rows})
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for s in SETTINGS:
        ax.plot(alphas, [np.mean([r[f"{s}_map@20"] for r in rows if r["alpha"] == a]) for a in alphas], marker="o",
                label=s)
    ax.set_xlabel("α (share of X-X-mono batches)")
    ax.set_ylabel("mAP@20")
    ax.set_title(f"alpha sweep ({summary['preset']} preset)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_cka_by_layer(summary: dict[str, Any], path: str | Path) -> str | None:
    curves = {m: summary[m]["cka_by_layer"] for m in ("mono", "cross", "hybrid") if summary.get(m, {}).get("cka_by_layer")}
    if summary.get("pretrained", {}).get("cka_by_layer"):
        curves = {"pretrained": summary["pretrained"]["cka_by_layer"], **curves}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, marker=".", label=MODE_LABELS.get(name, name))
    ax.set_xlabel("layer (0 = embedding output)")
    ax.set_ylabel("linear CKA, en vs X (mean)")
    ax.set_title("cross-lingual alignment by layer", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


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
            written.append(plot_heatmap(mat, q, c, f"{MODE_LABELS[mode]}: mAP@20 per language pair (seed {rs[0]['seed']})",
                                        out / f"map_pairs_{mode}.png", xlabel="candidate pool", ylabel="query language"))
    langs = sorted({lang for m in ("mono", "cross", "hybrid") for r in runs if r["mode"] == m for lang in (r.get("cka_en") or {})})
    if langs:
        rows, mat = [], []
        for m in ("pretrained", "mono", "cross", "hybrid"):
            src = summary.get("pretrained") if m == "pretrained" else next((r for r in runs if r["mode"] == m), None)
            if src and src.get("cka_en"):
                rows.append(MODE_LABELS.get(m, m))
                mat.append([src["cka_en"].get(lang, np.nan) for lang in langs])
        written.append(plot_heatmap(np.asarray(mat), rows, langs, "linear CKA (debiased), English vs X questions",
                                    out / "cka_en_vs_x.png", xlabel="language X", vmin=None))
    for fn, name in ((plot_alpha_sweep, "alpha_sweep.png"), (plot_cka_by_layer, "cka_by_layer.png")):
        p = fn(summary, out / name)
        if p:
            written.append(p)
    md = [f"# Results: `{summary['preset']}` preset", "", summary.get("description", ""), "",
          "Mean ± sd over seeds. mAP@20 in the LAReQA protocol (macro-averaged over language pairs); rank distance "
          "= language bias in the multilingual pool (lower is better); CKA = debiased linear CKA between English "
          "questions and the same questions in each other language (mean over languages).", "",
          results_table(summary), ""]
    sweep = sweep_table(summary)
    if sweep:
        md += ["## Alpha sweep", "", sweep, ""]
    cmd = (summary.get("config") or {}).get("command")
    if cmd:
        md += ["Command:", "", "```", cmd, "```", ""]
    md += [f"![{Path(p).stem}]({Path(p).name})" for p in written]
    atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    return [str(out / "results.md"), *written]


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
        sampler_config = {"mode": spec.mode, "alpha": spec.alpha, "seed": spec.seed, "batch_size": preset.batch_size,
                          "languages": corpus.languages, "sources": corpus.sources}
    write_sampler_config(model_dir, sampler_config)
    rows = "\n".join(
        f"| {s} | {_fmt(record.get(f'{s}_map@20'))} | {_fmt(record.get(f'{s}_recall@10'))} | "
        f"{_fmt(record.get(f'{s}_ndcg@10'))} | {_fmt(record.get(f'{s}_rank_distance'), digits=1)} |"
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

Multilingual rank distance (language bias, lower is better): {_fmt(record.get("rank_distance"), digits=1)}.
Debiased linear CKA, English vs other-language questions: {_fmt(record.get("cka"))}.

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
