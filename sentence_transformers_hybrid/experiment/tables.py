"""The Markdown tables of an experiment's report: pure functions of the summary (``results.json``), no I/O.

:func:`results_table` (the paper's table), :func:`bias_table` (language bias three ways), :func:`centered_table`
(every model with the language-centering control), :func:`language_table` (the multi setting per query language),
:func:`claims_table` (the paper's claims, :func:`~.claims.check_claims`), :func:`sweep_table` (the alpha sweep),
:func:`runs_table` (each run's time) and :func:`partial_note` (the head of a partial report). Each reads a model's
figures through :func:`~.stats.model_stat`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluation.retrieval import SETTINGS
from .claims import check_claims
from .stats import format_value, model_label, model_stat, sd_shown, summary_models

__all__ = ["bias_table", "centered_table", "claims_table", "language_table", "partial_note", "results_table",
           "runs_table", "sweep_table"]


def _cell(summary: Mapping[str, Any], model: str, setting: str | None, metric: str, centered: bool = False,
          digits: int = 3) -> str:
    """A model's figure as a cell: mean ± sd over seeds (the mean alone for one seed), "–" where not measured."""
    st = model_stat(summary, model, setting, metric, centered)
    return "–" if st is None else format_value(st.mean, sd_shown(st), digits)


def _seeds(summary: Mapping[str, Any], model: str, centered: bool = False) -> str:
    if model == "pretrained":
        return "–"
    e = summary[model].get("centered") if centered else summary[model]
    return str(e.get("n_seeds", "–")) if isinstance(e, Mapping) else "–"


def results_table(summary: Mapping[str, Any], modes: Sequence[str] = ("mono", "cross", "hybrid")) -> str:
    """The paper-style Markdown table: rows = modes, columns = Mono / Cross / Multi mAP@20, rank distance, CKA.

    Mean ± sd over seeds (no sd with one seed: 0.000 would read as measured); the pretrained model first.

    Example:
        >>> row = {"n_seeds": 1, "mono": {"map@20": 0.5}, "cross": {"map@20": 0.4}, "multi": {"map@20": 0.3},
        ...        "rank_distance": 100.0, "cka": 0.7}
        >>> print(results_table({"mono": row}).splitlines()[-1])
        | X-X-mono | 0.500 | 0.400 | 0.300 | 100.0 | 0.700 | 1 |
    """
    lines = [
        "| Model | Mono mAP@20 | Cross mAP@20 | Multi mAP@20 | Rank distance ↓ | CKA (en vs X) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    models = (["pretrained"] if summary.get("pretrained") else []) + [m for m in modes if summary.get(m)]
    for m in models:
        lines.append(
            f"| {model_label(summary, m)} | " + " | ".join(_cell(summary, m, s, "map@20") for s in SETTINGS)
            + f" | {_cell(summary, m, None, 'rank_distance', digits=1)} | {_cell(summary, m, None, 'cka')} | "
            f"{'–' if m == 'pretrained' else summary[m]['n_seeds']} |"
        )
    return "\n".join(lines)


def sweep_table(summary: Mapping[str, Any]) -> str:
    """The alpha sweep, one row per (α, seed) run; "" without a sweep."""
    rows = summary.get("alpha_sweep") or []
    if not rows:
        return ""
    lines = ["| α | seed | Mono mAP@20 | Cross mAP@20 | Multi mAP@20 | Rank distance | CKA |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['alpha']:g} | {r['seed']} | {format_value(r['mono_map@20'])} | {format_value(r['cross_map@20'])} | "
            f"{format_value(r['multi_map@20'])} | {format_value(r['rank_distance'], digits=1)} | "
            f"{format_value(r.get('cka'))} |"
        )
    return "\n".join(lines)


def runs_table(summary: Mapping[str, Any]) -> str:
    """One row per training run: its wall time, throughput (pairs / s), the load average when it ended and the device.

    The time is honest only on idle cores, hence the load average beside it (1 / 5 / 15 min; 2 cores here).
    """
    runs = [r for r in summary.get("runs", []) if r.get("train_seconds")]
    if not runs:
        return ""
    preset = (summary.get("config") or {}).get("preset") or {}
    lines = ["| Run | Train time | Pairs / s | Load average at end | Resumed from | Device |", "|---|---|---|---|---|---|"]
    for r in runs:
        t = float(r["train_seconds"])
        load = " / ".join(f"{x:.2f}" for x in r.get("load_average") or []) or "–"
        # pairs per step = the global batch the run's sampler recorded (every process's batch), as the progress bar
        batch = (r.get("sampler") or {}).get("global_batch_size") or preset.get("batch_size") or 0
        pairs = (preset.get("max_steps") or 0) * batch
        rate = f"{pairs / t:.1f}" if pairs else "–"
        lines.append(f"| {r['run_id']} | {t:,.0f} s ({t / 60:.1f} min) | {rate} | {load} | "
                     f"{r.get('resumed_from') or '–'} | {r.get('device') or '–'} |")
    return "\n".join(lines)


def partial_note(summary: Mapping[str, Any]) -> str:
    """The note that heads a partial report (``summary["partial"]``, from ``st-hybrid report --partial``); "" if whole."""
    part = summary.get("partial") or {}
    missing = list(part.get("missing") or [])
    if not missing:
        return ""
    finished = list(part.get("finished") or [])
    cmd = (summary.get("config") or {}).get("command") or "the same `st-hybrid experiment` command"
    return (f"**Partial: {len(finished)} of the protocol's {len(finished) + len(missing)} training runs have "
            f"finished** ({', '.join(finished) or 'none'}; the pretrained model is evaluated). Missing: "
            f"{', '.join(missing)}. Rows with one seed show no sd, and a claim without both of its rows has no "
            f"verdict yet. The rest continues with `{cmd}` (finished runs are kept in `runs/` and skipped; an "
            f"interrupted run resumes from its last checkpoint); `st-hybrid report --output-dir <dir>` without "
            f"`--partial` then rebuilds the whole report.")


def _verdict_text(c: Mapping[str, Any]) -> str:
    if c["holds"] is None:
        return "not defined" if c.get("difference") is not None else "not measured"
    return "holds" if c["holds"] else "does not hold"


def claims_table(summary: Mapping[str, Any]) -> str:
    """The paper's claims as measured (:func:`~.claims.check_claims`), one Markdown row each: what is compared, the
    difference in the claimed direction, the pooled sd, the margin in sd and the verdict."""
    lines = ["| Claim | Compared | Difference | Pooled sd | Margin (sd) | Verdict |", "|---|---|---|---|---|---|"]
    for c in check_claims(summary):
        digits = 1 if "rank_distance" in c["id"] else 3
        diff = "–" if c["difference"] is None else f"{c['difference']:+.{digits}f}"
        sd = "–" if c["sd"] is None else f"{c['sd']:.{digits}f}"
        margin = f"{c['margin_sd']:+.2f}" if c["margin_sd"] is not None else ("n/a" if c["difference"] is not None else "–")
        verdict = _verdict_text(c) + (f" ({c['note']})" if c["note"] else "")
        lines.append(f"| {c['claim']} | {c['compared'] or '–'} | {diff} | {sd} | {margin} | {verdict} |")
    return "\n".join(lines)


def bias_table(summary: Mapping[str, Any]) -> str:
    """Language bias measured three ways, plain embeddings: rank distance, the same-language share of the top 20 and
    the multi mAP (at 20 and over the full ranking), one row per model (mean ± sd over seeds)."""
    lines = ["| Model | Multi mAP@20 | Multi mAP (full ranking) | Rank distance ↓ | Same-language share @20 | seeds |",
             "|---|---|---|---|---|---|"]
    for m in summary_models(summary):
        lines.append(f"| {model_label(summary, m)} | {_cell(summary, m, 'multi', 'map@20')} | "
                     f"{_cell(summary, m, 'multi', 'map')} | {_cell(summary, m, None, 'rank_distance', digits=1)} | "
                     f"{_cell(summary, m, 'multi', 'same_language@20')} | {_seeds(summary, m)} |")
    return "\n".join(lines)


def centered_table(summary: Mapping[str, Any]) -> str:
    """Every model (pretrained and each mode) evaluated with the language-centering control: the results table's
    columns plus the full-ranking multi mAP and the same-language share (mean ± sd over seeds)."""
    lines = ["| Model (centered) | Mono mAP@20 | Cross mAP@20 | Multi mAP@20 | Multi mAP (full ranking) | "
             "Rank distance ↓ | Same-language share @20 | seeds |", "|---|---|---|---|---|---|---|---|"]
    for m in summary_models(summary):
        if model_stat(summary, m, "multi", "map@20", centered=True) is None:
            continue
        lines.append(
            f"| {model_label(summary, m)} | " + " | ".join(_cell(summary, m, s, "map@20", True) for s in SETTINGS)
            + f" | {_cell(summary, m, 'multi', 'map', True)} | {_cell(summary, m, None, 'rank_distance', True, 1)} | "
            f"{_cell(summary, m, 'multi', 'same_language@20', True)} | {_seeds(summary, m, True)} |"
        )
    return "\n".join(lines)


def language_table(pairs_by_model: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The multi setting per query language: for each model (label -> its evaluator rows, e.g. the first seed's
    ``pairs``) the same-language share @20 / rank distance / mAP@20 of that language's queries. Shows which
    languages the bias hurts."""
    models = {label: {r["query_language"]: r for r in rows if r.get("setting") == "multi"}
              for label, rows in pairs_by_model.items()}
    models = {k: v for k, v in models.items() if v}
    if not models:
        return ""
    langs = sorted({lang for rows in models.values() for lang in rows})
    head = "| Query language | " + " | ".join(f"{label}: same-lang@20 / rank dist. / mAP@20" for label in models) + " |"
    lines = [head, "|---|" + "---|" * len(models)]
    for lang in langs:
        cells = []
        for rows in models.values():
            r = rows.get(lang)
            cells.append("–" if r is None else
                         f"{format_value(r.get('same_language@20'))} / {format_value(r.get('rank_distance'), digits=1)}"
                         f" / {format_value(r.get('map@20'))}")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
