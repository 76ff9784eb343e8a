"""Results tables, plots and model cards of an experiment (pure functions of the run records; no training).

Besides the paper-style table: language bias measured three ways (:func:`bias_table`), every model again with the
post-hoc language-centering control (:func:`centered_table`, :func:`plot_bias_scatter`), the multi setting per query
language (:func:`language_table`) and the paper's claims checked from the runs' mean ± sd (:func:`check_claims`,
:func:`claims_table`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import atomic_write_json, atomic_write_text
from ..evaluation.retrieval import SETTINGS, setting_metrics
from ..metrics.retrieval import LAREQA_METRICS
from ..sampling.modes import MODES, PAPER_NAMES
from ..sampling.factory import write_sampler_config

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


def _nest_settings(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {s: {m: record[f"{s}_{m}"] for m in setting_metrics(s) if f"{s}_{m}" in record} for s in SETTINGS}


def _has_centered(record: Mapping[str, Any]) -> bool:
    c = record.get("centered")
    return bool(c) and "error" not in c


def nest(record: dict[str, Any]) -> dict[str, Any]:
    """``{"mono_map@20": x, ...}`` -> ``{"mono": {"map@20": x, ...}, ..., "rank_distance", "cka", "centered"}``
    (``centered``: the same settings and ``rank_distance`` with the language-centering control, when measured)."""
    out: dict[str, Any] = _nest_settings(record)
    out["rank_distance"] = record.get("rank_distance")
    out["cka"] = record.get("cka")
    out["cka_en"] = record.get("cka_en")
    out["cka_by_layer"] = record.get("cka_by_layer")
    if _has_centered(record):
        out["centered"] = {**_nest_settings(record["centered"]), "rank_distance": record["centered"].get("rank_distance")}
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
        entry.update(_mean_sd_settings(rs))
        for key in ("rank_distance", "cka", "train_seconds"):
            mean, sd = _mean_sd([r.get(key) for r in rs])
            entry[key], entry[f"{key}_sd"] = mean, sd
        centered = [r["centered"] for r in rs if _has_centered(r)]
        if centered:
            entry["centered"] = {"n_seeds": len(centered), **_mean_sd_settings(centered)}
            mean, sd = _mean_sd([c.get("rank_distance") for c in centered])
            entry["centered"]["rank_distance"], entry["centered"]["rank_distance_sd"] = mean, sd
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
    summary["claims"] = check_claims(summary)
    return summary


def _mean_sd_settings(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{setting: {metric: mean, f"{metric}_sd": sd}}`` over records holding ``f"{setting}_{metric}"``."""
    out: dict[str, dict[str, float]] = {}
    for s in SETTINGS:
        out[s] = {}
        for m in setting_metrics(s):
            key = f"{s}_{m}"
            if key in records[0]:
                mean, sd = _mean_sd([r.get(key) for r in records])
                out[s][m], out[s][f"{m}_sd"] = mean, sd
    return out


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

        def sd(value: float | None, n: int = e.get("n_seeds", 0)) -> float | None:
            return value if n > 1 else None  # one seed: no sd to show (0.000 would read as measured)

        label = MODE_LABELS.get(mode, mode) + (f" (α={e['alpha']:g})" if "alpha" in e else "")
        lines.append(
            f"| {label} | {_fmt(e['mono']['map@20'], sd(e['mono']['map@20_sd']))} | "
            f"{_fmt(e['cross']['map@20'], sd(e['cross']['map@20_sd']))} | "
            f"{_fmt(e['multi']['map@20'], sd(e['multi']['map@20_sd']))} | "
            f"{_fmt(e['rank_distance'], sd(e['rank_distance_sd']), digits=1)} | {_fmt(e['cka'], sd(e['cka_sd']))} | "
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


# ------------------------------------------------------------------------------ language bias, control, claims
#: The models of the bias tables and the scatter plot, in order (those in the summary).
MODELS: tuple[str, ...] = ("pretrained", *MODES)


def _label(summary: Mapping[str, Any], model: str) -> str:
    e = summary.get(model) or {}
    return MODE_LABELS.get(model, model) + (f" (α={e['alpha']:g})" if "alpha" in e else "")


def _models(summary: Mapping[str, Any]) -> list[str]:
    return [m for m in MODELS if isinstance(summary.get(m), dict) and (m == "pretrained" or "n_seeds" in summary[m])]


@dataclass(frozen=True)
class Stat:
    """A row's figure: mean over seeds, sd over seeds (ddof 1; NaN or 0 with one seed) and the number of seeds."""

    mean: float
    sd: float
    n: int


def model_stat(summary: Mapping[str, Any], model: str, setting: str | None, metric: str,
               centered: bool = False) -> Stat | None:
    """A model's figure from the summary (``setting=None`` for ``rank_distance``), or None where not measured.

    The pretrained model is one deterministic evaluation: ``n = 1``, no sd.

    Example:
        >>> summary = {"hybrid": {"n_seeds": 3, "multi": {"map@20": 0.5, "map@20_sd": 0.02}}}
        >>> model_stat(summary, "hybrid", "multi", "map@20")
        Stat(mean=0.5, sd=0.02, n=3)
    """
    entry = summary.get(model)
    if not isinstance(entry, Mapping):
        return None
    n = 1 if model == "pretrained" else int(entry.get("n_seeds", 1))
    if centered:
        entry = entry.get("centered")
        if not isinstance(entry, Mapping):
            return None
        n = int(entry.get("n_seeds", n))
    src = entry if setting is None else entry.get(setting) or {}
    mean = src.get(metric)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return None
    sd = src.get(f"{metric}_sd")
    return Stat(float(mean), float("nan") if sd is None or model == "pretrained" else float(sd), n)


def pooled_sd(a: Stat, b: Stat) -> float | None:
    """The pooled sd of two rows, ``sqrt(((n_a - 1) sd_a² + (n_b - 1) sd_b²) / (n_a + n_b - 2))``; None when
    ``n_a + n_b - 2 = 0`` (one seed each: no spread measured). A row of one evaluation (the pretrained model)
    contributes no degree of freedom, so against it the pooled sd is the other row's sd.

    Example:
        >>> round(pooled_sd(Stat(0.5, 0.03, 3), Stat(0.4, 0.04, 3)), 4)   # sqrt((2 * 0.0009 + 2 * 0.0016) / 4)
        0.0354
    """
    df = a.n + b.n - 2
    if df <= 0:
        return None
    ss = sum((x.n - 1) * x.sd**2 for x in (a, b) if x.n > 1)
    return math.sqrt(ss / df)


def _verdict(difference: float, sd: float | None) -> tuple[bool, float | None, str]:
    holds = difference > 0
    if sd is None:
        return holds, None, "one seed: margin not defined, verdict = sign of the raw difference"
    if sd == 0:
        return holds, None, "sd = 0 over the seeds: margin not defined"
    return holds, difference / sd, ""


def _compare(cid: str, claim: str, definition: str, summary: Mapping[str, Any], a: tuple, b: tuple,
             higher_is_better: bool = True) -> dict[str, Any]:
    """Claim "row a beats row b": ``difference = a - b`` (``b - a`` when lower is better), margin = difference / pooled sd.
    ``a``, ``b``: ``(model, setting, metric, centered)``."""
    row: dict[str, Any] = {"id": cid, "claim": claim, "definition": definition, "holds": None, "difference": None,
                           "sd": None, "margin_sd": None, "compared": "", "note": ""}
    sa, sb = model_stat(summary, *a), model_stat(summary, *b)
    names = [_label(summary, x[0]) + (" centered" if x[3] else "") for x in (a, b)]
    if sa is None or sb is None:
        missing = names[0] if sa is None else names[1]
        row["note"] = f"not measured: no {missing} figure"
        return row
    digits = 1 if a[2] == "rank_distance" else 3
    row["compared"] = f"{names[0]} {_fmt(sa.mean, _sd_or_none(sa), digits)} vs {names[1]} {_fmt(sb.mean, _sd_or_none(sb), digits)}"
    difference = (sa.mean - sb.mean) if higher_is_better else (sb.mean - sa.mean)
    sd = pooled_sd(sa, sb)
    row["holds"], row["margin_sd"], row["note"] = _verdict(difference, sd)
    row["difference"], row["sd"] = difference, sd
    return row


def _sd_or_none(stat: Stat) -> float | None:
    return stat.sd if stat.n > 1 else None


def _best_of(cid: str, summary: Mapping[str, Any], mode: str, setting: str, trained: Sequence[str]) -> dict[str, Any]:
    others = [m for m in trained if m != mode and model_stat(summary, m, setting, "map@20") is not None]
    claim = f"{MODE_LABELS.get(mode, mode)} is best on {setting}"
    definition = (f"{setting} mAP@20 of {MODE_LABELS.get(mode, mode)} minus the highest of the other trained modes "
                  f"({', '.join(MODE_LABELS.get(m, m) for m in others) or 'none'}); holds when > 0")
    if not others:
        return {"id": cid, "claim": claim, "definition": definition, "holds": None, "difference": None, "sd": None,
                "margin_sd": None, "compared": "", "note": "not measured: no other trained mode"}
    runner_up = max(others, key=lambda m: model_stat(summary, m, setting, "map@20").mean)
    return _compare(cid, claim, definition, summary, (mode, setting, "map@20", False),
                    (runner_up, setting, "map@20", False))


def check_claims(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims, each checked from the runs' mean ± sd (as measured; nothing is tuned toward a verdict).

    Every claim is a difference ``d`` between two rows, in the direction the paper claims (positive = as claimed),
    on mAP@20 (the paper's figure) or the rank distance; the margin is ``d / s`` with ``s`` the pooled sd of the two
    rows (:func:`pooled_sd`). With one seed per row the margin is not defined (``margin_sd`` None) and the verdict is
    the sign of the raw difference. The claims (``id``):

    * ``mono_best_on_mono``: X-X-mono's mono mAP@20 minus the best other trained mode's;
    * ``cross_best_on_cross``: X-Y's cross mAP@20 minus the best other trained mode's;
    * ``hybrid_best_on_multi``: hybrid's multi mAP@20 minus the best other trained mode's;
    * ``hybrid_rank_distance_below_mono``: X-X-mono's rank distance minus hybrid's;
    * ``hybrid_within_1sd_of_best``: in every setting, hybrid's mAP@20 is at most one pooled sd (of hybrid and the
      best trained mode of that setting) below the best; ``difference`` is the largest shortfall, ``margin_sd`` is
      ``1 - max(shortfall / sd)`` (>= 0 holds); undefined (``holds`` None) with one seed;
    * ``hybrid_beats_centering_alone``: hybrid's multi mAP@20 minus the *pretrained* model's multi mAP@20 with the
      language-centering control (centering without any training); the pretrained model is one evaluation, so the
      sd is hybrid's.

    Returns one dict per claim: ``id, claim, definition, compared, difference, sd, margin_sd, holds`` (True,
    False, or None when not measured / not defined) and ``note``.

    Example:
        >>> mk = lambda mono, cross, multi, rd: {"n_seeds": 1, "mono": {"map@20": mono}, "cross": {"map@20": cross},
        ...                                      "multi": {"map@20": multi}, "rank_distance": rd}
        >>> summary = {"mono": mk(0.6, 0.2, 0.3, 90.0), "cross": mk(0.5, 0.4, 0.35, 40.0),
        ...            "hybrid": mk(0.58, 0.38, 0.4, 50.0)}
        >>> [(c["id"], c["holds"]) for c in check_claims(summary)][:4]
        [('mono_best_on_mono', True), ('cross_best_on_cross', True), ('hybrid_best_on_multi', True), ('hybrid_rank_distance_below_mono', True)]
    """
    trained = [m for m in _models(summary) if m != "pretrained"]
    claims = [
        _best_of("mono_best_on_mono", summary, "mono", "mono", trained),
        _best_of("cross_best_on_cross", summary, "cross", "cross", trained),
        _best_of("hybrid_best_on_multi", summary, "hybrid", "multi", trained),
        _compare("hybrid_rank_distance_below_mono", "Hybrid's rank distance is below X-X-mono's",
                 "multi rank distance of X-X-mono minus hybrid's (lower is less language bias); holds when > 0",
                 summary, ("hybrid", None, "rank_distance", False), ("mono", None, "rank_distance", False),
                 higher_is_better=False),
        _within_one_sd(summary, trained),
        _compare("hybrid_beats_centering_alone", "Hybrid beats centering alone",
                 "hybrid's multi mAP@20 minus the pretrained model's multi mAP@20 with language centering (the "
                 "post-hoc control, no training); holds when > 0", summary,
                 ("hybrid", "multi", "map@20", False), ("pretrained", "multi", "map@20", True)),
    ]
    return claims


def _within_one_sd(summary: Mapping[str, Any], trained: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "hybrid_within_1sd_of_best", "claim": "Hybrid is within 1 sd of the best in every setting",
        "definition": "per setting, shortfall = best trained mode's mAP@20 minus hybrid's (0 when hybrid is best), "
                      "sd = pooled sd of hybrid and that mode; holds when shortfall <= 1 sd in mono, cross and multi; "
                      "margin = 1 - max(shortfall / sd)",
        "holds": None, "difference": None, "sd": None, "margin_sd": None, "compared": "", "note": ""}
    hybrid = {s: model_stat(summary, "hybrid", s, "map@20") for s in SETTINGS}
    if "hybrid" not in trained or any(v is None for v in hybrid.values()):
        row["note"] = "not measured: no hybrid figure in every setting"
        return row
    parts, shortfalls, ratios, undefined = [], [], [], False
    for s in SETTINGS:
        best = max((m for m in trained if model_stat(summary, m, s, "map@20") is not None),
                   key=lambda m: model_stat(summary, m, s, "map@20").mean)
        b = model_stat(summary, best, s, "map@20")
        shortfall = max(0.0, b.mean - hybrid[s].mean)
        sd = pooled_sd(hybrid[s], b)
        if sd is None:
            undefined = True
            ratio = None
        elif sd == 0:
            ratio = 0.0 if shortfall == 0 else math.inf
        else:
            ratio = shortfall / sd
        parts.append(f"{s}: best {_label(summary, best)}, shortfall {shortfall:.3f}"
                     + (f" = {ratio:.2f} sd" if ratio is not None and math.isfinite(ratio) else ""))
        shortfalls.append((shortfall, sd))
        ratios.append(ratio)
    row["compared"] = "; ".join(parts)
    row["difference"], row["sd"] = max(shortfalls, key=lambda x: x[0])
    if undefined:
        row["note"] = "one seed: '1 sd' not defined, no verdict; raw shortfalls given"
        return row
    worst = max(ratios)
    row["holds"] = worst <= 1.0
    if math.isfinite(worst):
        row["margin_sd"] = 1.0 - worst
    else:
        row["note"] = "sd = 0 over the seeds with a shortfall: margin not defined"
    return row


def _verdict_text(c: Mapping[str, Any]) -> str:
    if c["holds"] is None:
        return "not defined" if c.get("difference") is not None else "not measured"
    return "holds" if c["holds"] else "does not hold"


def claims_table(summary: Mapping[str, Any]) -> str:
    """The paper's claims as measured (:func:`check_claims`), one Markdown row each: what is compared, the
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


def _cell(summary: Mapping[str, Any], model: str, setting: str | None, metric: str, centered: bool,
          digits: int = 3) -> str:
    st = model_stat(summary, model, setting, metric, centered)
    return "–" if st is None else _fmt(st.mean, _sd_or_none(st), digits)


def _seeds(summary: Mapping[str, Any], model: str, centered: bool = False) -> str:
    if model == "pretrained":
        return "–"
    e = summary[model].get("centered") if centered else summary[model]
    return str(e.get("n_seeds", "–")) if isinstance(e, Mapping) else "–"


def bias_table(summary: Mapping[str, Any]) -> str:
    """Language bias measured three ways, plain embeddings: rank distance, the same-language share of the top 20 and
    the multi mAP (at 20 and over the full ranking), one row per model (mean ± sd over seeds)."""
    lines = ["| Model | Multi mAP@20 | Multi mAP (full ranking) | Rank distance ↓ | Same-language share @20 | seeds |",
             "|---|---|---|---|---|---|"]
    for m in _models(summary):
        lines.append(f"| {_label(summary, m)} | {_cell(summary, m, 'multi', 'map@20', False)} | "
                     f"{_cell(summary, m, 'multi', 'map', False)} | {_cell(summary, m, None, 'rank_distance', False, 1)} | "
                     f"{_cell(summary, m, 'multi', 'same_language@20', False)} | {_seeds(summary, m)} |")
    return "\n".join(lines)


def centered_table(summary: Mapping[str, Any]) -> str:
    """Every model (pretrained and each mode) evaluated with the language-centering control: the results table's
    columns plus the full-ranking multi mAP and the same-language share (mean ± sd over seeds)."""
    lines = ["| Model (centered) | Mono mAP@20 | Cross mAP@20 | Multi mAP@20 | Multi mAP (full ranking) | "
             "Rank distance ↓ | Same-language share @20 | seeds |", "|---|---|---|---|---|---|---|---|"]
    for m in _models(summary):
        if model_stat(summary, m, "multi", "map@20", centered=True) is None:
            continue
        lines.append(
            f"| {_label(summary, m)} | " + " | ".join(_cell(summary, m, s, "map@20", True) for s in SETTINGS)
            + f" | {_cell(summary, m, 'multi', 'map', True)} | {_cell(summary, m, None, 'rank_distance', True, 1)} | "
            f"{_cell(summary, m, 'multi', 'same_language@20', True)} | {_seeds(summary, m, True)} |"
        )
    return "\n".join(lines)


def bias_points(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The scatter plot's points: per model, mean multi mAP@20 and rank distance, plain and centered (None where the
    centered figures were not measured)."""
    points = []
    for m in _models(summary):
        plain_map, plain_rd = model_stat(summary, m, "multi", "map@20"), model_stat(summary, m, None, "rank_distance")
        if plain_map is None or plain_rd is None:
            continue
        c_map = model_stat(summary, m, "multi", "map@20", centered=True)
        c_rd = model_stat(summary, m, None, "rank_distance", centered=True)
        points.append({"model": m, "label": _label(summary, m), "rank_distance": plain_rd.mean,
                       "multi_map@20": plain_map.mean,
                       "centered_rank_distance": c_rd.mean if c_rd else None,
                       "centered_multi_map@20": c_map.mean if c_map else None})
    return points


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
                         f"{_fmt(r.get('same_language@20'))} / {_fmt(r.get('rank_distance'), digits=1)} / "
                         f"{_fmt(r.get('map@20'))}")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
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
    and ``st-hybrid report``, so both write the same files."""
    out = Path(out)
    atomic_write_json(out / "results.json", summary)
    atomic_write_json(out / "runs.json", runs_json(summary, device=device, command=command))
    return [str(out / "results.json"), str(out / "runs.json"), *write_report(out, summary)]

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


def plot_bias_scatter(summary: Mapping[str, Any], path: str | Path) -> str | None:
    """Multi mAP@20 against rank distance, one point per model (:func:`bias_points`), with an arrow from each model
    to its language-centered version; None when there is no point."""
    points = bias_points(summary)
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(points):
        color = colors[i % len(colors)]
        ax.scatter([p["rank_distance"]], [p["multi_map@20"]], color=color, label=p["label"], zorder=3)
        if p["centered_multi_map@20"] is not None:
            ax.annotate("", xy=(p["centered_rank_distance"], p["centered_multi_map@20"]),
                        xytext=(p["rank_distance"], p["multi_map@20"]),
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2})
            ax.scatter([p["centered_rank_distance"]], [p["centered_multi_map@20"]], color=color, marker="x", zorder=3)
    ax.set_xlabel("multi rank distance (language bias; lower is better)")
    ax.set_ylabel("multi mAP@20")
    ax.set_title(f"language bias vs multilingual retrieval ({summary.get('preset', '')} preset)\n"
                 "● plain, × language-centered (arrow: the control)", fontsize=9)
    ax.legend(fontsize=8)
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
    for m in _models(summary):
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
                found[_label(summary, m)] = pairs
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
