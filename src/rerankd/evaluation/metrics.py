"""Ranking metrics with ir-measures, and how a variant differs from the first one, per query."""

from __future__ import annotations

import math
from dataclasses import dataclass

import ir_measures
from scipy import stats

from rerankd.evaluation.first_stage import Run

# Reranking the top k leaves Recall@k as it was, so every depth here stays below the default k of 100.
MEASURES = {"nDCG@10": ir_measures.nDCG @ 10, "MRR@10": ir_measures.RR @ 10,
            "R@10": ir_measures.R @ 10, "R@20": ir_measures.R @ 20}
TOP = 10  # the depth of "top-10 changed"


@dataclass(frozen=True)
class Scores:
    """One system's metrics: the means, and each query's values (for the paired test and the plot)."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]  # measure -> query id -> value


def evaluate(qrels: dict[str, dict[str, int]], run: Run) -> Scores:
    """`MEASURES` of `run` against `qrels`, with ir-measures: its means and its per-query values."""
    by_name = {str(m): name for name, m in MEASURES.items()}
    means = {by_name[str(m)]: v for m, v in ir_measures.calc_aggregate(MEASURES.values(), qrels, run).items()}
    per_query: dict[str, dict[str, float]] = {name: {} for name in MEASURES}
    for metric in ir_measures.iter_calc(MEASURES.values(), qrels, run):
        per_query[by_name[str(metric.measure)]][metric.query_id] = metric.value
    return Scores({name: means[name] for name in MEASURES}, per_query)


def top_ids(run: Run, qid: str, depth: int = TOP) -> list[str]:
    return [doc for doc, _ in sorted(run[qid].items(), key=lambda d: -d[1])[:depth]]


def top_changed(first: Run, other: Run) -> float:
    """The share of queries whose top 10 (documents and their order) differs between the two runs."""
    queries = list(first)
    return sum(top_ids(first, q) != top_ids(other, q) for q in queries) / max(1, len(queries))


@dataclass(frozen=True)
class PairedTest:
    mean_difference: float
    t: float | None  # None when every query has the same difference, where the test is undefined
    p: float | None


def paired_tests(first: Scores, other: Scores) -> dict[str, PairedTest]:
    """`scipy.stats.ttest_rel` of `other` against `first` per measure, over the queries both have values for."""
    tests = {}
    for name in MEASURES:
        queries = sorted(first.per_query[name].keys() & other.per_query[name].keys())
        a = [first.per_query[name][q] for q in queries]
        b = [other.per_query[name][q] for q in queries]
        diff = sum(y - x for x, y in zip(a, b, strict=True)) / max(1, len(queries))
        result = stats.ttest_rel(b, a) if len(queries) > 1 else None
        t = float(result.statistic) if result is not None else math.nan
        p = float(result.pvalue) if result is not None else math.nan
        tests[name] = PairedTest(diff, None if math.isnan(t) else t, None if math.isnan(p) else p)
    return tests
