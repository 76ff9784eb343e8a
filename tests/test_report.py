"""The report's bias tables, scatter points and the paper's claims, on hand-made summaries (no training)."""

from __future__ import annotations

import copy
import math

import pytest

from sentence_transformers_hybrid.experiment.presets import PRESETS
from sentence_transformers_hybrid.experiment.report import (
    Stat,
    bias_points,
    bias_table,
    centered_table,
    check_claims,
    claims_table,
    language_table,
    plot_bias_scatter,
    pooled_sd,
    summarise,
)

# ------------------------------------------------------------------------------------------ summaries


def entry(mono: float, cross: float, multi: float, rd: float, sd: float = 0.01, rd_sd: float = 10.0, n: int = 3,
          centered: dict | None = None) -> dict:
    e = {"n_seeds": n, "rank_distance": rd, "rank_distance_sd": rd_sd}
    for s, v in (("mono", mono), ("cross", cross), ("multi", multi)):
        e[s] = {"map@20": v, "map@20_sd": sd}
    e["multi"].update({"map": multi + 0.01, "map_sd": sd, "same_language@20": 0.5, "same_language@20_sd": 0.02})
    if centered is not None:
        e["centered"] = centered
    return e


def pretrained(multi_centered: float = 0.30) -> dict:
    return {
        "mono": {"map@20": 0.40}, "cross": {"map@20": 0.10}, "multi": {"map@20": 0.20, "same_language@20": 0.9},
        "rank_distance": 500.0,
        "centered": {"mono": {"map@20": 0.41}, "cross": {"map@20": 0.15},
                     "multi": {"map@20": multi_centered, "same_language@20": 0.6}, "rank_distance": 300.0},
    }


def paper_is_right() -> dict:
    """Every claim holds: X-X-mono best on mono, X-Y on cross, hybrid on multi and close everywhere, less biased."""
    return {
        "preset": "hand-made",
        "pretrained": pretrained(),
        "mono": entry(0.600, 0.200, 0.300, 400.0),
        "cross": entry(0.500, 0.420, 0.380, 150.0),
        "hybrid": {**entry(0.595, 0.415, 0.420, 180.0), "alpha": 0.5},
    }


def claim(summary: dict, cid: str) -> dict:
    return next(c for c in check_claims(summary) if c["id"] == cid)


CLAIMS = ("mono_best_on_mono", "cross_best_on_cross", "hybrid_best_on_multi", "hybrid_rank_distance_below_mono",
          "hybrid_within_1sd_of_best", "hybrid_beats_centering_alone")


# ------------------------------------------------------------------------------------------- claims


def test_the_six_claims_in_order():
    assert [c["id"] for c in check_claims(paper_is_right())] == list(CLAIMS)


@pytest.mark.parametrize("cid", CLAIMS)
def test_claim_holds_when_the_paper_is_right(cid):
    c = claim(paper_is_right(), cid)
    assert c["holds"] is True and c["margin_sd"] > 0, c


def _break(cid: str) -> dict:
    s = paper_is_right()
    if cid == "mono_best_on_mono":
        s["cross"]["mono"]["map@20"] = 0.65
    elif cid == "cross_best_on_cross":
        s["hybrid"]["cross"]["map@20"] = 0.45
    elif cid == "hybrid_best_on_multi":
        s["cross"]["multi"]["map@20"] = 0.43
    elif cid == "hybrid_rank_distance_below_mono":
        s["hybrid"]["rank_distance"] = 410.0
    elif cid == "hybrid_within_1sd_of_best":
        s["hybrid"]["mono"]["map@20"] = 0.580  # 0.02 below X-X-mono, pooled sd 0.01: 2 sd
    elif cid == "hybrid_beats_centering_alone":
        s["pretrained"] = pretrained(multi_centered=0.45)
    return s


@pytest.mark.parametrize("cid", CLAIMS)
def test_claim_does_not_hold_when_its_comparison_is_reversed(cid):
    c = claim(_break(cid), cid)
    assert c["holds"] is False, c


def test_margin_is_the_difference_over_the_pooled_sd():
    s = paper_is_right()
    s["mono"]["mono"]["map@20_sd"] = 0.03
    s["hybrid"]["mono"]["map@20_sd"] = 0.04  # runner-up on mono
    c = claim(s, "mono_best_on_mono")
    assert c["difference"] == pytest.approx(0.600 - 0.595)
    assert c["sd"] == pytest.approx(math.sqrt((2 * 0.03**2 + 2 * 0.04**2) / 4))
    assert c["margin_sd"] == pytest.approx(0.005 / c["sd"])


def test_best_of_compares_with_the_strongest_other_mode():
    c = claim(paper_is_right(), "hybrid_best_on_multi")
    assert c["difference"] == pytest.approx(0.420 - 0.380)  # X-Y (0.38) beats X-X-mono (0.30) on multi
    assert "X-Y" in c["compared"]


def test_rank_distance_claim_is_mono_minus_hybrid():
    c = claim(paper_is_right(), "hybrid_rank_distance_below_mono")
    assert c["difference"] == pytest.approx(400.0 - 180.0)
    assert c["margin_sd"] == pytest.approx(220.0 / 10.0)


def test_within_one_sd_margin_is_one_minus_the_worst_shortfall_in_sd():
    s = paper_is_right()
    s["hybrid"]["mono"]["map@20"] = 0.592  # 0.8 sd below X-X-mono; cross 0.5 sd below X-Y; best on multi
    c = claim(s, "hybrid_within_1sd_of_best")
    assert c["holds"] is True
    assert c["margin_sd"] == pytest.approx(1 - 0.8)
    assert c["difference"] == pytest.approx(0.008)


def test_centering_alone_is_the_pretrained_models_centered_multi_map_and_hybrids_sd():
    c = claim(paper_is_right(), "hybrid_beats_centering_alone")
    assert c["difference"] == pytest.approx(0.420 - 0.30)
    assert c["sd"] == pytest.approx(0.01)  # the pretrained model is one evaluation: no degree of freedom
    assert "pretrained centered" in c["compared"]


def test_one_seed_leaves_the_margin_undefined_and_reports_the_raw_difference():
    s = paper_is_right()
    for m in ("mono", "cross", "hybrid"):
        s[m]["n_seeds"] = 1
    c = claim(s, "mono_best_on_mono")
    assert c["holds"] is True and c["margin_sd"] is None and c["sd"] is None
    assert c["difference"] == pytest.approx(0.005)
    assert "margin not defined" in c["note"]


def test_one_seed_gives_no_verdict_on_within_one_sd():
    s = paper_is_right()
    for m in ("mono", "cross", "hybrid"):
        s[m]["n_seeds"] = 1
    c = claim(s, "hybrid_within_1sd_of_best")
    assert c["holds"] is None and c["difference"] == pytest.approx(0.005)


def test_claims_without_centered_figures_are_not_measured():
    s = paper_is_right()
    del s["pretrained"]["centered"]
    c = claim(s, "hybrid_beats_centering_alone")
    assert c["holds"] is None and c["note"].startswith("not measured")


def test_pooled_sd_of_two_single_seed_rows_is_undefined():
    assert pooled_sd(Stat(0.5, 0.0, 1), Stat(0.4, 0.0, 1)) is None
    assert pooled_sd(Stat(0.5, 0.02, 3), Stat(0.4, float("nan"), 1)) == pytest.approx(0.02)


def test_claims_table_marks_each_verdict_and_margin():
    table = claims_table(_break("hybrid_best_on_multi"))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert rows["Hybrid is best on multi"].endswith("| does not hold |")
    assert "| -0.010 |" in rows["Hybrid is best on multi"]  # 0.42 - 0.43
    assert "| 0.010 | -1.00 |" in rows["Hybrid is best on multi"]  # pooled sd of two rows of sd 0.01; -0.01 / 0.01
    assert rows["X-X-mono is best on mono"].endswith("| holds |")


# --------------------------------------------------------------------------------- tables and plot


def test_centered_table_has_every_model_with_its_centered_figures():
    s = paper_is_right()
    for m in ("mono", "cross", "hybrid"):
        s[m]["centered"] = {"n_seeds": 3, **{k: copy.deepcopy(s[m][k]) for k in ("mono", "cross", "multi")},
                            "rank_distance": 100.0, "rank_distance_sd": 5.0}
        s[m]["centered"]["multi"]["map@20"] = 0.5
    table = centered_table(s)
    lines = table.splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines] == ["pretrained", "X-X-mono", "X-Y", "Hybrid (α=0.5)"]
    assert "| 0.410 | 0.150 | 0.300 |" in lines[0]  # pretrained centered mono / cross / multi
    assert "| 0.500 ± 0.010 |" in lines[3] and "| 100.0 ± 5.0 |" in lines[3]


def test_bias_table_shows_rank_distance_same_language_share_and_full_map():
    line = bias_table(paper_is_right()).splitlines()[-1]
    assert line == "| Hybrid (α=0.5) | 0.420 ± 0.010 | 0.430 ± 0.010 | 180.0 ± 10.0 | 0.500 ± 0.020 | 3 |"


def test_bias_points_pair_each_model_with_its_centered_version(tmp_path):
    s = paper_is_right()
    points = bias_points(s)
    assert [p["model"] for p in points] == ["pretrained", "mono", "cross", "hybrid"]
    assert points[0] == {"model": "pretrained", "label": "pretrained", "rank_distance": 500.0, "multi_map@20": 0.20,
                         "centered_rank_distance": 300.0, "centered_multi_map@20": 0.30}
    assert points[3]["centered_multi_map@20"] is None  # not measured for this hand-made mode
    path = plot_bias_scatter(s, tmp_path / "bias.png")
    assert path is not None and (tmp_path / "bias.png").stat().st_size > 1000


def test_language_table_has_a_row_per_query_language():
    pairs = [{"setting": "multi", "query_language": "de", "same_language@20": 0.75, "rank_distance": 12.0,
              "map@20": 0.5},
             {"setting": "mono", "query_language": "de", "map@20": 0.9},
             {"setting": "multi", "query_language": "en", "same_language@20": 1.0, "rank_distance": 40.0,
              "map@20": 0.25}]
    table = language_table({"Hybrid": pairs})
    assert table.splitlines()[2:] == ["| de | 0.750 / 12.0 / 0.500 |", "| en | 1.000 / 40.0 / 0.250 |"]


# ------------------------------------------------------------------------------------------ summarise


def run_record(mode: str, seed: int, multi: float, centered_multi: float) -> dict:
    r = {"mode": mode, "alpha": 0.5 if mode == "hybrid" else None, "seed": seed, "run_id": f"{mode}-s{seed}",
         "rank_distance": 100.0 + seed, "cka": 0.5, "train_seconds": 1.0}
    for s in ("mono", "cross", "multi"):
        r[f"{s}_map@20"] = multi
    r["multi_same_language@20"] = 0.5
    r["centered"] = {f"{s}_map@20": centered_multi for s in ("mono", "cross", "multi")}
    r["centered"]["rank_distance"] = 50.0 + seed
    return r


def test_summarise_averages_the_centered_figures_over_seeds():
    preset = PRESETS["smoke"]
    runs = [run_record(m, seed, 0.3 + 0.01 * seed, 0.4 + 0.02 * seed) for seed in (0, 1) for m in ("mono", "cross",
                                                                                                    "hybrid")]
    pre = {**run_record("mono", 0, 0.2, 0.25), "cka_by_layer": None}
    summary = summarise(preset, pre, runs)
    c = summary["hybrid"]["centered"]
    assert c["n_seeds"] == 2
    assert c["multi"]["map@20"] == pytest.approx(0.41) and c["multi"]["map@20_sd"] == pytest.approx(0.02 / 2**0.5)
    assert c["rank_distance"] == pytest.approx(50.5)
    assert summary["pretrained"]["centered"]["multi"]["map@20"] == 0.25
    assert summary["hybrid"]["multi"]["same_language@20"] == 0.5
    assert [c["id"] for c in summary["claims"]] == list(CLAIMS)


def test_results_table_shows_no_sd_for_a_single_seed():
    from sentence_transformers_hybrid.experiment.report import results_table

    row = {"mono": {"map@20": 0.5, "map@20_sd": 0.0}, "cross": {"map@20": 0.4, "map@20_sd": 0.0},
           "multi": {"map@20": 0.3, "map@20_sd": 0.0}, "rank_distance": 100.0, "rank_distance_sd": 0.0,
           "cka": 0.7, "cka_sd": 0.0}
    one = results_table({"hybrid": {**row, "n_seeds": 1, "alpha": 0.5}})
    assert "| Hybrid (α=0.5) | 0.500 | 0.400 | 0.300 | 100.0 | 0.700 | 1 |" in one
    three = results_table({"hybrid": {**row, "n_seeds": 3, "alpha": 0.5}})
    assert "0.500 ± 0.000" in three
