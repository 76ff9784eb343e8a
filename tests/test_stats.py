"""The seed statistics behind results.json: a figure some runs lack is named, never averaged over the others."""

from __future__ import annotations

import math

import pytest

from sentence_transformers_hybrid.experiment.presets import PRESETS
from sentence_transformers_hybrid.experiment.report import summarise


def run(mode: str, seed: int, **overrides) -> dict:
    """A hand-made run record of ``mode`` (every figure present), with ``overrides`` (None = not measured; a key
    set to ``...`` is removed)."""
    r = {"mode": mode, "alpha": 0.5 if mode == "hybrid" else None, "seed": seed, "run_id": f"{mode}-s{seed}",
         "rank_distance": 100.0 + seed, "cka": 0.5 + 0.1 * seed, "train_seconds": 10.0,
         "multi_same_language@20": 0.5, "cka_by_layer": [0.1, 0.2]}
    for s in ("mono", "cross", "multi"):
        r[f"{s}_map@20"] = 0.3 + 0.01 * seed
    r.update(overrides)
    return {k: v for k, v in r.items() if v is not ...}


PRETRAINED = {"mono_map@20": 0.2, "cross_map@20": 0.1, "multi_map@20": 0.1, "rank_distance": 500.0}


def summary_of(runs: list[dict]) -> dict:
    return summarise(PRESETS["smoke"], PRETRAINED, runs)


def test_a_figure_one_seed_lacks_is_named_not_averaged_over_the_others():
    runs = [run("hybrid", 0), run("hybrid", 1, cka=None), run("hybrid", 2)]
    with pytest.raises(ValueError, match=r"hybrid: cka: no value in run hybrid-s1 \(present in hybrid-s0, hybrid-s2\)"):
        summary_of(runs)


def test_a_metric_the_first_run_lacks_is_named_not_dropped():
    runs = [run("mono", 0, **{"multi_same_language@20": ...}), run("mono", 1), run("mono", 2)]
    with pytest.raises(ValueError, match=r"mono: multi_same_language@20: no value in run mono-s0"):
        summary_of(runs)


def test_a_metric_only_the_first_run_has_is_named():
    runs = [run("cross", 0, multi_map=0.4), run("cross", 1)]
    with pytest.raises(ValueError, match=r"cross: multi_map: no value in run cross-s1 \(present in cross-s0\)"):
        summary_of(runs)


def test_a_layer_curve_one_seed_lacks_is_named():
    runs = [run("mono", 0), run("mono", 1, cka_by_layer=None)]
    with pytest.raises(ValueError, match=r"mono: cka_by_layer: .*'mono-s1': None"):
        summary_of(runs)


def test_a_figure_no_run_measured_stays_not_measured():
    summary = summary_of([run("hybrid", 0, cka=None), run("hybrid", 1, cka=None)])
    assert summary["hybrid"]["n_seeds"] == 2
    assert math.isnan(summary["hybrid"]["cka"]) and math.isnan(summary["hybrid"]["cka_sd"])


def test_every_figure_present_gives_mean_and_sd_over_every_seed():
    summary = summary_of([run("hybrid", 0), run("hybrid", 1), run("hybrid", 2)])
    h = summary["hybrid"]
    assert h["n_seeds"] == 3 and h["cka"] == pytest.approx(0.6) and h["cka_sd"] == pytest.approx(0.1)
    assert h["multi"]["same_language@20"] == 0.5 and h["cka_by_layer"] == pytest.approx([0.1, 0.2])
