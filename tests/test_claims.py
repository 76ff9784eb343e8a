"""The claims' verdicts as pure functions of two rows' mean ± sd (no summary, no model)."""

from __future__ import annotations

import math

import pytest

from sentence_transformers_hybrid.experiment.claims import CLAIM_IDS, Verdict, compare, shortfall, within_one_sd
from sentence_transformers_hybrid.experiment.stats import Stat


def test_compare_holds_when_a_beats_b_with_the_margin_in_pooled_sd():
    v = compare(Stat(0.60, 0.03, 3), Stat(0.55, 0.04, 3))
    sd = math.sqrt((2 * 0.03**2 + 2 * 0.04**2) / 4)
    assert v.holds is True and v.difference == pytest.approx(0.05)
    assert v.sd == pytest.approx(sd) and v.margin_sd == pytest.approx(0.05 / sd) and v.note == ""


def test_compare_does_not_hold_when_b_is_higher():
    v = compare(Stat(0.50, 0.01, 3), Stat(0.52, 0.01, 3))
    assert v.holds is False and v.margin_sd == pytest.approx(-2.0)


def test_compare_lower_is_better_turns_the_difference_around():
    v = compare(Stat(180.0, 10.0, 3), Stat(400.0, 10.0, 3), higher_is_better=False)
    assert v.holds is True and v.difference == pytest.approx(220.0) and v.margin_sd == pytest.approx(22.0)


def test_compare_with_one_seed_each_gives_the_sign_and_no_margin():
    v = compare(Stat(0.6, float("nan"), 1), Stat(0.5, float("nan"), 1))
    assert v == Verdict(True, pytest.approx(0.1), None, None,
                        "one seed: margin not defined, verdict = sign of the raw difference")


def test_compare_with_zero_sd_has_no_margin():
    v = compare(Stat(0.6, 0.0, 3), Stat(0.5, 0.0, 3))
    assert v.holds is True and v.sd == 0 and v.margin_sd is None and "sd = 0" in v.note


def test_compare_against_one_evaluation_uses_the_other_rows_sd():
    v = compare(Stat(0.42, 0.01, 3), Stat(0.30, float("nan"), 1))  # the pretrained model: one evaluation
    assert v.sd == pytest.approx(0.01) and v.margin_sd == pytest.approx(12.0)


def test_shortfall_is_zero_when_hybrid_is_best():
    assert shortfall(Stat(0.7, 0.01, 3), Stat(0.6, 0.01, 3)) == (0.0, pytest.approx(0.01), 0.0)


def test_shortfall_in_sd_and_its_undefined_cases():
    gap, sd, ratio = shortfall(Stat(0.592, 0.01, 3), Stat(0.600, 0.01, 3))
    assert gap == pytest.approx(0.008) and sd == pytest.approx(0.01) and ratio == pytest.approx(0.8)
    assert shortfall(Stat(0.5, 0.0, 1), Stat(0.6, 0.0, 1)) == (pytest.approx(0.1), None, None)
    assert shortfall(Stat(0.5, 0.0, 3), Stat(0.6, 0.0, 3))[2] == math.inf


def test_within_one_sd_holds_up_to_one_sd_with_margin_one_minus_the_worst():
    v = within_one_sd([(0.008, 0.01, 0.8), (0.005, 0.01, 0.5), (0.0, 0.01, 0.0)])
    assert v.holds is True and v.margin_sd == pytest.approx(0.2)
    assert v.difference == 0.008 and v.sd == 0.01  # the largest shortfall and its sd


def test_within_one_sd_fails_beyond_one_sd():
    assert within_one_sd([(0.02, 0.01, 2.0), (0.0, 0.01, 0.0)]).holds is False


def test_within_one_sd_has_no_verdict_with_one_seed():
    v = within_one_sd([(0.005, None, None), (0.0, None, None)])
    assert v.holds is None and v.difference == 0.005 and "one seed" in v.note


def test_within_one_sd_with_zero_sd_and_a_shortfall_does_not_hold_and_has_no_margin():
    v = within_one_sd([(0.01, 0.0, math.inf)])
    assert v.holds is False and v.margin_sd is None and "sd = 0" in v.note


def test_claim_ids_are_the_six_in_report_order():
    assert CLAIM_IDS == ("mono_best_on_mono", "cross_best_on_cross", "hybrid_best_on_multi",
                         "hybrid_rank_distance_below_mono", "hybrid_within_1sd_of_best", "hybrid_beats_centering_alone")
