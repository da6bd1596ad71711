"""`rerankd calibrate`'s statistics on synthetic scores whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from rerankd.engine.calibration import Calibration
from rerankd.errors import RerankdError
from rerankd.evaluation.thresholds import all_cuts, best_cut, confidence_intervals, fit_platt, reliability


def test_best_f1_cut_is_the_known_gap_between_the_classes() -> None:
    # Relevant pairs score 0.6-0.95, the rest 0.05-0.4, except one relevant at 0.3 and one not at 0.7.
    relevant_scores = [0.95, 0.9, 0.85, 0.8, 0.75, 0.65, 0.6, 0.3]
    other_scores = [0.7, 0.4, 0.35, 0.25, 0.2, 0.1, 0.05]
    scores = np.array(relevant_scores + other_scores)
    relevant = np.array([True] * 8 + [False] * 7)
    cut = best_cut(all_cuts(scores, relevant))
    # Keeping >= 0.6 gets 7 of 8 relevant with 1 wrong: F1 = 14/16, better than any other cut.
    assert 0.4 < cut.threshold <= 0.6
    assert cut.threshold == pytest.approx(0.5)  # halfway between 0.6 and the next score down, 0.4
    assert (cut.precision, cut.recall, cut.f1, cut.kept) == pytest.approx((7 / 8, 7 / 8, 7 / 8, 8))


def test_target_precision_takes_the_cut_with_best_recall_reaching_it() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    relevant = np.array([True, True, False, True, False, False])
    cut = best_cut(all_cuts(scores, relevant), target_precision=0.75)
    assert cut.threshold == pytest.approx(0.55)  # keeps 0.9, 0.8, 0.7, 0.6: precision 3/4, recall 1
    assert (cut.precision, cut.recall) == pytest.approx((0.75, 1.0))
    with pytest.raises(RerankdError, match="no threshold reaches precision 1"):
        best_cut(all_cuts(np.array([0.9, 0.8]), np.array([False, True])), target_precision=1.0)


def test_ties_are_never_split() -> None:
    cuts = all_cuts(np.array([0.7, 0.5, 0.5, 0.2]), np.array([True, True, False, False]))
    assert list(cuts.kept) == [1, 3, 4]


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(0)

    def interval(queries: int) -> tuple[float, float, float]:
        scores = rng.random(queries * 10)
        relevant = rng.random(queries * 10) < scores  # higher scores are more often relevant
        groups = np.repeat(np.arange(queries), 10)
        low, high = confidence_intervals(scores, relevant, groups, 0.5)["precision"]
        kept = scores >= 0.5
        return low, (relevant & kept).sum() / kept.sum(), high

    low, estimate, high = interval(20)
    assert low <= estimate <= high
    wide = high - low
    low, estimate, high = interval(400)
    assert low <= estimate <= high and high - low < wide / 2


def test_platt_recovers_the_scaling_that_made_the_labels() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 20_000)
    relevant = rng.random(len(logits)) < Calibration(0.7, -1.0, "true").relevance(logits)
    a, b = fit_platt(logits, relevant)
    assert a == pytest.approx(0.7, abs=0.05) and b == pytest.approx(-1.0, abs=0.1)
    *_, ece_fitted = reliability(Calibration(a, b, "fit").relevance(logits), relevant)
    *_, ece_sigmoid = reliability(Calibration().relevance(logits), relevant)
    assert ece_fitted < 0.03 < ece_sigmoid


def test_platt_never_reverses_the_order() -> None:
    logits = np.array([-2.0, -1.0, 1.0, 2.0])
    a, _ = fit_platt(logits, np.array([True, True, False, False]))  # the scores point the wrong way
    assert a == 0.0
