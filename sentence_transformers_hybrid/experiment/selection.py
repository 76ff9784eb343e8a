"""The ``beyond`` protocol's two decisions, fixed before any run, as pure functions: which candidate goes to the test
(:func:`select_candidate`, on the dev split) and whether it held up there (:func:`non_inferior`, on MLQA-R).

* **Selection** (:data:`SELECTION_RULE`): for each candidate, its *worst margin* is the minimum over the settings
  mono, cross and multi of (candidate mAP@20 - the best of the three baselines ``mono``, ``cross`` and ``hybrid``
  (alpha 0.5) in that setting); the candidate with the largest worst margin is chosen, ties broken by the lower
  rank distance, then by name. Baselines are not candidates for the choice (a baseline's worst margin is never
  above 0, and the test compares the choice with them).
* **Non-inferiority** (:data:`NON_INFERIORITY_RULE`): in one setting, the candidate is non-inferior to the best
  baseline (highest mean over seeds) when its mean is at least that mean - max(0.003, pooled sd), the pooled sd
  being that of the candidate's and that baseline's seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .presets import RunSpec
from .stats import mean_sd
from .stats import pooled_sd as stats_pooled_sd

__all__ = [
    "BASELINES", "NON_INFERIORITY_FLOOR", "NON_INFERIORITY_RULE", "SELECTION_RULE", "SETTINGS", "best_baseline",
    "finetune_run_id", "non_inferior", "pooled_sd", "select_candidate", "worst_margin",
]

BASELINES: tuple[str, ...] = ("mono", "cross", "hybrid")
SETTINGS: tuple[str, ...] = ("mono", "cross", "multi")
NON_INFERIORITY_FLOOR = 0.003

SELECTION_RULE = (
    "On the dev split (xquad-r-dev), one seed per candidate: a candidate's worst margin is min over the settings "
    "mono, cross, multi of (its mAP@20 - the best mAP@20 of the baselines mono (X-X-mono), cross (X-Y) and hybrid "
    "(alpha 0.5) in that setting). The candidate (baselines excluded) with the largest worst margin is chosen; ties "
    "are broken by the lower multi rank distance, then by name."
)
NON_INFERIORITY_RULE = (
    "On MLQA-R over seeds 0-4, per setting: the candidate is non-inferior to the best baseline (the highest mean "
    "mAP@20 of mono, cross, hybrid) when its mean >= that mean - max(0.003, pooled sd of the candidate's and that "
    "baseline's seeds)."
)


def _score(entry: Mapping[str, Any], setting: str) -> float:
    key = f"{setting}_map@20"
    value = entry.get(key)
    if value is None or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValueError(f"candidate {entry.get('name')!r} has no {key} (got {value!r})")
    return float(value)


def worst_margin(candidate: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]]) -> float:
    """min over mono / cross / multi of ``candidate[f"{s}_map@20"] - max(b[f"{s}_map@20"] for b in baselines)``.

    Example::

        >>> base = [{"name": "mono", "mono_map@20": .70, "cross_map@20": .50, "multi_map@20": .40},
        ...         {"name": "hybrid", "mono_map@20": .68, "cross_map@20": .55, "multi_map@20": .45}]
        >>> round(worst_margin({"mono_map@20": .71, "cross_map@20": .56, "multi_map@20": .44}, base), 3)
        -0.01
    """
    if not baselines:
        raise ValueError("worst_margin needs at least one baseline")
    return min(_score(candidate, s) - max(_score(b, s) for b in baselines) for s in SETTINGS)


def select_candidate(candidates: Sequence[Mapping[str, Any]], baselines: Sequence[str] = BASELINES) -> str:
    """The name of the chosen candidate under :data:`SELECTION_RULE`.

    ``candidates``: the entries of ``selection.json`` (``name``, ``mono_map@20``, ``cross_map@20``,
    ``multi_map@20``, ``rank_distance``), the baselines among them under their names.

    Example::

        >>> rows = [{"name": "mono", "mono_map@20": .70, "cross_map@20": .50, "multi_map@20": .40, "rank_distance": 9},
        ...         {"name": "cross", "mono_map@20": .66, "cross_map@20": .56, "multi_map@20": .46, "rank_distance": 5},
        ...         {"name": "hybrid", "mono_map@20": .68, "cross_map@20": .56, "multi_map@20": .46, "rank_distance": 6},
        ...         {"name": "a", "mono_map@20": .69, "cross_map@20": .56, "multi_map@20": .46, "rank_distance": 7},
        ...         {"name": "b", "mono_map@20": .69, "cross_map@20": .57, "multi_map@20": .46, "rank_distance": 6}]
        >>> select_candidate(rows)
        'b'
    """
    names = [c.get("name") for c in candidates]
    duplicated = sorted({n for n in names if names.count(n) > 1}, key=str)
    if duplicated:
        raise ValueError(f"candidate name(s) {duplicated} appear more than once")
    base = [c for c in candidates if c.get("name") in baselines]
    missing = [b for b in baselines if b not in names]
    if missing:
        raise ValueError(f"the baseline(s) {missing} are not among the candidates {names}")
    others = [c for c in candidates if c.get("name") not in baselines]
    if not others:
        raise ValueError(f"no candidate besides the baselines {list(baselines)}")

    def key(c: Mapping[str, Any]) -> tuple[float, float, str]:
        rd = c.get("rank_distance")
        rd = float("inf") if rd is None or math.isnan(float(rd)) else float(rd)
        return (-worst_margin(c, base), rd, str(c.get("name")))

    return str(min(others, key=key)["name"])


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """The pooled standard deviation of two samples (ddof 1 each): sqrt(((na-1) sa^2 + (nb-1) sb^2) / (na+nb-2)).

    Example::

        >>> round(pooled_sd([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]), 4)
        0.7071
    """
    a_stat, b_stat = (mean_sd({str(i): float(v) for i, v in enumerate(x)}) for x in (a, b))
    sd = stats_pooled_sd(a_stat, b_stat)  # the report's pooled sd, of the same seed statistics
    if sd is None:
        raise ValueError(f"pooled_sd needs at least 3 values in all, got {len(a)} and {len(b)}")
    return sd


def finetune_run_id(baseline: str, seed: int) -> str:
    """The ``finetune`` preset's run id of a baseline (hybrid at its alpha 0.5).

    Example::

        >>> finetune_run_id("hybrid", 2), finetune_run_id("mono", 0)
        ('hybrid-a0.5-s2', 'mono-s0')
    """
    return RunSpec(baseline, 0.5 if baseline == "hybrid" else None, seed).run_id


def best_baseline(baselines: Mapping[str, Sequence[float]]) -> str:
    """The baseline with the highest mean (ties: the later name), as :func:`non_inferior` compares with it.

    Example::

        >>> best_baseline({"mono": [.664, .666], "cross": [.646], "hybrid": [.657]})
        'mono'
    """
    means = {name: sum(v) / len(v) for name, v in baselines.items()}
    return max(means, key=lambda n: (means[n], n))


def non_inferior(candidate: Sequence[float], baselines: Mapping[str, Sequence[float]],
                 floor: float = NON_INFERIORITY_FLOOR) -> dict[str, Any]:
    """The :data:`NON_INFERIORITY_RULE` verdict in one setting.

    Args:
        candidate: the candidate's mAP@20 per seed.
        baselines: ``{name: mAP@20 per seed}`` of the baselines.
        floor: the smallest margin (0.003).

    Returns:
        ``{"holds", "candidate_mean", "best", "best_mean", "pooled_sd", "margin", "threshold", "difference"}``
        (``difference`` = candidate mean - best mean).

    Example::

        >>> v = non_inferior([.655, .657, .659], {"mono": [.664, .666, .668], "hybrid": [.655, .657, .659]})
        >>> v["best"], v["holds"], round(v["threshold"], 3)
        ('mono', False, 0.663)
    """
    if not candidate or not baselines or any(not v for v in baselines.values()):
        raise ValueError("non_inferior needs values for the candidate and every baseline")
    best = best_baseline(baselines)
    best_mean = sum(baselines[best]) / len(baselines[best])
    c_mean = sum(candidate) / len(candidate)
    sd = pooled_sd(candidate, baselines[best])
    margin = max(float(floor), sd)
    threshold = best_mean - margin
    return {"holds": bool(c_mean >= threshold), "candidate_mean": c_mean, "best": best, "best_mean": best_mean,
            "pooled_sd": sd, "margin": margin, "threshold": threshold, "difference": c_mean - best_mean}
