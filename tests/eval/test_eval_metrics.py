"""The metrics of `rerankd eval`: ir-measures' numbers, checked against ones worked out by hand."""

from __future__ import annotations

import math

import pytest

from rerankd.evaluation.metrics import evaluate, paired_tests, top_changed


def test_ndcg_and_mrr_match_values_worked_out_by_hand() -> None:
    # q1: the relevant documents a and c are ranked 2nd and 4th of five.
    # q2: its one relevant document x is ranked 1st.
    qrels = {"q1": {"a": 1, "c": 1, "n": 0}, "q2": {"x": 1}}
    run = {"q1": {"b": 5.0, "a": 4.0, "d": 3.0, "c": 2.0, "e": 1.0}, "q2": {"x": 0.9, "y": 0.1}}
    scores = evaluate(qrels, run)

    # DCG = sum over relevant ranks r of 1 / log2(r + 1); the ideal ranking puts both first.
    q1_ndcg = (1 / math.log2(3) + 1 / math.log2(5)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert scores.per_query["nDCG@10"]["q1"] == pytest.approx(q1_ndcg)
    assert scores.per_query["nDCG@10"]["q2"] == pytest.approx(1.0)
    # q1: (0.63093 + 0.43068) / (1 + 0.63093) = 0.65092; the mean with q2's 1.0 is 0.82546.
    assert scores.means["nDCG@10"] == pytest.approx((q1_ndcg + 1.0) / 2)
    assert scores.means["nDCG@10"] == pytest.approx(0.82546, abs=1e-5)
    # MRR@10: the first relevant document is 2nd (1/2) and 1st (1).
    assert scores.means["MRR@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores.means["R@10"] == pytest.approx(1.0)


def test_graded_labels_are_gains_and_relevance_stops_at_the_cut_off() -> None:
    # A grade-2 document at rank 1 and a grade-1 one at rank 11: only the first is inside the top 10.
    run = {"q": {f"n{i}": 100.0 - i for i in range(2, 11)} | {"g2": 200.0, "g1": 0.0}}
    scores = evaluate({"q": {"g2": 2, "g1": 1}}, run)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert scores.means["nDCG@10"] == pytest.approx(2 / ideal)
    assert scores.means["R@10"] == pytest.approx(0.5)
    assert scores.means["R@20"] == pytest.approx(1.0)


def test_top_changed_and_paired_test_against_the_first_variant() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}, "q3": {"a": 1}}
    first = {q: {"a": 1.0, "b": 2.0} for q in qrels}  # a second everywhere
    other = {"q1": {"a": 3.0, "b": 2.0}, "q2": {"a": 3.0, "b": 2.0}, "q3": {"a": 1.0, "b": 2.0}}
    assert top_changed(first, other) == pytest.approx(2 / 3)
    tests = paired_tests(evaluate(qrels, first), evaluate(qrels, other))
    assert tests["MRR@10"].mean_difference == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert tests["MRR@10"].p is not None and 0 < tests["MRR@10"].p < 1
    assert tests["R@10"].mean_difference == 0 and tests["R@10"].p is None  # no variance: undefined, not NaN
