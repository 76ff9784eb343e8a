"""The paper's claims, checked from the runs' mean ± sd: pure verdict functions on :class:`~.stats.Stat` figures
(:func:`compare`, :func:`shortfall`, :func:`within_one_sd`) and :func:`check_claims`, which applies them to a
summary. As measured; nothing is tuned toward a verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..evaluation.retrieval import SETTINGS
from .stats import MODE_LABELS, Stat, format_value, model_label, model_stat, pooled_sd, sd_shown, summary_models

__all__ = ["CLAIM_IDS", "Verdict", "check_claims", "compare", "shortfall", "within_one_sd"]

#: The claims :func:`check_claims` checks, in order.
CLAIM_IDS: tuple[str, ...] = ("mono_best_on_mono", "cross_best_on_cross", "hybrid_best_on_multi",
                              "hybrid_rank_distance_below_mono", "hybrid_within_1sd_of_best",
                              "hybrid_beats_centering_alone")


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict: ``holds`` (None: not defined), the ``difference`` in the claimed direction, the pooled
    ``sd`` it is measured against, the margin in sd (None where not defined) and a ``note`` saying why."""

    holds: bool | None
    difference: float | None
    sd: float | None
    margin_sd: float | None
    note: str = ""


def compare(a: Stat, b: Stat, higher_is_better: bool = True) -> Verdict:
    """Claim "row a beats row b": ``difference = a - b`` (``b - a`` when lower is better), margin = difference /
    pooled sd (:func:`~.stats.pooled_sd`). Without a pooled sd (one seed each) or with sd 0 the margin is not
    defined and the verdict is the sign of the raw difference.

    Example:
        >>> v = compare(Stat(0.60, 0.01, 3), Stat(0.58, 0.01, 3))
        >>> v.holds, round(v.difference, 3), round(v.margin_sd, 1)
        (True, 0.02, 2.0)
        >>> compare(Stat(40.0, 0.0, 1), Stat(50.0, 0.0, 1), higher_is_better=False).note
        'one seed: margin not defined, verdict = sign of the raw difference'
    """
    difference = (a.mean - b.mean) if higher_is_better else (b.mean - a.mean)
    sd = pooled_sd(a, b)
    holds = difference > 0
    if sd is None:
        return Verdict(holds, difference, None, None,
                       "one seed: margin not defined, verdict = sign of the raw difference")
    if sd == 0:
        return Verdict(holds, difference, sd, None, "sd = 0 over the seeds: margin not defined")
    return Verdict(holds, difference, sd, difference / sd)


def shortfall(hybrid: Stat, best: Stat) -> tuple[float, float | None, float | None]:
    """How far ``hybrid`` is below ``best``: ``(shortfall, pooled sd, shortfall / sd)``; the shortfall is 0 when
    hybrid is best; the ratio is None without a pooled sd, 0 or ``inf`` when the sd is 0.

    Example:
        >>> [round(x, 3) for x in shortfall(Stat(0.58, 0.01, 3), Stat(0.60, 0.01, 3))]
        [0.02, 0.01, 2.0]
    """
    gap = max(0.0, best.mean - hybrid.mean)
    sd = pooled_sd(hybrid, best)
    if sd is None:
        return gap, None, None
    if sd == 0:
        return gap, sd, 0.0 if gap == 0 else math.inf
    return gap, sd, gap / sd


def within_one_sd(shortfalls: Sequence[tuple[float, float | None, float | None]]) -> Verdict:
    """Claim "hybrid is within 1 sd of the best in every setting", from each setting's :func:`shortfall`: holds when
    every ratio is at most 1; ``difference`` / ``sd`` are those of the largest shortfall, ``margin_sd`` is
    ``1 - max(ratio)``. No verdict when a setting has no sd (one seed).

    Example:
        >>> within_one_sd([(0.008, 0.01, 0.8), (0.0, 0.01, 0.0)]).holds
        True
        >>> within_one_sd([(0.02, 0.01, 2.0)]).margin_sd
        -1.0
    """
    difference, sd = max(((gap, s) for gap, s, _ in shortfalls), key=lambda x: x[0])
    ratios = [r for _, _, r in shortfalls]
    if any(r is None for r in ratios):
        return Verdict(None, difference, sd, None, "one seed: '1 sd' not defined, no verdict; raw shortfalls given")
    worst = max(ratios)  # type: ignore[type-var]
    if math.isfinite(worst):
        return Verdict(worst <= 1.0, difference, sd, 1.0 - worst)
    return Verdict(False, difference, sd, None, "sd = 0 over the seeds with a shortfall: margin not defined")


# ------------------------------------------------------------------------------------------- on a summary
def _row(cid: str, claim: str, definition: str, verdict: Verdict | None = None, compared: str = "",
         note: str = "") -> dict[str, Any]:
    """A claim as ``results.json`` keeps it (the keys in this order)."""
    v = verdict or Verdict(None, None, None, None, note)
    return {"id": cid, "claim": claim, "definition": definition, "holds": v.holds, "difference": v.difference,
            "sd": v.sd, "margin_sd": v.margin_sd, "compared": compared, "note": v.note}


def _compare(cid: str, claim: str, definition: str, summary: Mapping[str, Any], a: tuple, b: tuple,
             higher_is_better: bool = True) -> dict[str, Any]:
    """:func:`compare` on two rows of the summary, ``a``, ``b``: ``(model, setting, metric, centered)``."""
    sa, sb = model_stat(summary, *a), model_stat(summary, *b)
    names = [model_label(summary, x[0]) + (" centered" if x[3] else "") for x in (a, b)]
    if sa is None or sb is None:
        return _row(cid, claim, definition, note=f"not measured: no {names[0] if sa is None else names[1]} figure")
    digits = 1 if a[2] == "rank_distance" else 3
    compared = (f"{names[0]} {format_value(sa.mean, sd_shown(sa), digits)} vs "
                f"{names[1]} {format_value(sb.mean, sd_shown(sb), digits)}")
    return _row(cid, claim, definition, compare(sa, sb, higher_is_better), compared)


def _best_of(cid: str, summary: Mapping[str, Any], mode: str, setting: str, trained: Sequence[str]) -> dict[str, Any]:
    others = [m for m in trained if m != mode and model_stat(summary, m, setting, "map@20") is not None]
    claim = f"{MODE_LABELS.get(mode, mode)} is best on {setting}"
    definition = (f"{setting} mAP@20 of {MODE_LABELS.get(mode, mode)} minus the highest of the other trained modes "
                  f"({', '.join(MODE_LABELS.get(m, m) for m in others) or 'none'}); holds when > 0")
    if not others:
        return _row(cid, claim, definition, note="not measured: no other trained mode")
    runner_up = max(others, key=lambda m: model_stat(summary, m, setting, "map@20").mean)
    return _compare(cid, claim, definition, summary, (mode, setting, "map@20", False),
                    (runner_up, setting, "map@20", False))


def _within_one_sd(summary: Mapping[str, Any], trained: Sequence[str]) -> dict[str, Any]:
    cid, claim = "hybrid_within_1sd_of_best", "Hybrid is within 1 sd of the best in every setting"
    definition = ("per setting, shortfall = best trained mode's mAP@20 minus hybrid's (0 when hybrid is best), "
                  "sd = pooled sd of hybrid and that mode; holds when shortfall <= 1 sd in mono, cross and multi; "
                  "margin = 1 - max(shortfall / sd)")
    hybrid = {s: model_stat(summary, "hybrid", s, "map@20") for s in SETTINGS}
    if "hybrid" not in trained or any(v is None for v in hybrid.values()):
        return _row(cid, claim, definition, note="not measured: no hybrid figure in every setting")
    parts, gaps = [], []
    for s in SETTINGS:
        best = max((m for m in trained if model_stat(summary, m, s, "map@20") is not None),
                   key=lambda m: model_stat(summary, m, s, "map@20").mean)
        gap = shortfall(hybrid[s], model_stat(summary, best, s, "map@20"))
        ratio = gap[2]
        parts.append(f"{s}: best {model_label(summary, best)}, shortfall {gap[0]:.3f}"
                     + (f" = {ratio:.2f} sd" if ratio is not None and math.isfinite(ratio) else ""))
        gaps.append(gap)
    return _row(cid, claim, definition, within_one_sd(gaps), "; ".join(parts))


def check_claims(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims, each checked from the runs' mean ± sd (as measured; nothing is tuned toward a verdict).

    Every claim is a difference ``d`` between two rows, in the direction the paper claims (positive = as claimed),
    on mAP@20 (the paper's figure) or the rank distance; the margin is ``d / s`` with ``s`` the pooled sd of the two
    rows (:func:`~.stats.pooled_sd`). With one seed per row the margin is not defined (``margin_sd`` None) and the
    verdict is the sign of the raw difference. The claims (``id``, :data:`CLAIM_IDS`):

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
    trained = [m for m in summary_models(summary) if m != "pretrained"]
    return [
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
