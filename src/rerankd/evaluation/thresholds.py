"""`rerankd calibrate`'s statistics: the best cut of scores, its confidence intervals, and Platt scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from rerankd.errors import ErrorKind, RerankdError

# Bootstrap over queries, since a query's pairs are not independent of each other; over pairs when there
# are too few queries to resample.
MIN_QUERIES_TO_RESAMPLE = 10
RESAMPLES = 2000


@dataclass(frozen=True)
class Cut:
    """Keep the pairs whose score is at least `threshold`: what they achieve."""

    threshold: float
    precision: float
    recall: float
    f1: float
    kept: int


@dataclass(frozen=True)
class Cuts:
    """Every distinct cut, highest threshold first: precision, recall and F1 of keeping the pairs above it."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    kept: np.ndarray

    def at(self, i: int) -> Cut:
        return Cut(float(self.thresholds[i]), float(self.precision[i]), float(self.recall[i]), float(self.f1[i]),
                   int(self.kept[i]))


def all_cuts(scores: np.ndarray, relevant: np.ndarray) -> Cuts:
    """The cuts between distinct scores; each threshold is halfway to the next lower score (the lowest
    score itself for the cut that keeps everything), so that it does not sit on a pair of this data."""
    if not relevant.any():
        raise RerankdError(ErrorKind.INVALID_INPUT, "no pair is labelled relevant; a threshold needs both kinds")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], relevant[order].astype(np.int64)
    true_positives = np.cumsum(hits)
    # The last position of each run of equal scores: a cut can't split ties.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    kept = ends + 1
    tp = true_positives[ends]
    precision = tp / kept
    recall = tp / hits.sum()
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    lower = np.append(ranked[ends[:-1] + 1], ranked[-1])
    thresholds = np.where(kept < len(ranked), (ranked[ends] + lower) / 2, ranked[-1])
    return Cuts(thresholds, precision, recall, f1, kept)


def best_cut(cuts: Cuts, target_precision: float | None = None) -> Cut:
    """The cut of best F1, or, with a target precision, the one reaching it with the best recall.

    Raises:
        RerankdError: INVALID_INPUT when no cut reaches the target precision.
    """
    if target_precision is None:
        return cuts.at(int(np.argmax(cuts.f1)))
    reaching = np.flatnonzero(cuts.precision >= target_precision)
    if not len(reaching):
        raise RerankdError(
            ErrorKind.INVALID_INPUT,
            f"no threshold reaches precision {target_precision:g} on this data (best: {cuts.precision.max():.3f}); "
            "lower --target-precision, or leave it out to maximise F1",
        )
    # The last such cut keeps the most pairs, so has the best recall.
    return cuts.at(int(reaching[-1]))


def confidence_intervals(
    scores: np.ndarray, relevant: np.ndarray, groups: np.ndarray, threshold: float,
    confidence: float = 0.95, seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of precision, recall and F1 at `threshold` (fixed, not refitted).

    Resamples the groups (queries) with replacement, or the pairs when there are fewer than
    `MIN_QUERIES_TO_RESAMPLE` groups.
    """
    if len(np.unique(groups)) < MIN_QUERIES_TO_RESAMPLE:
        groups = np.arange(len(scores))
    _, group = np.unique(groups, return_inverse=True)
    kept = scores >= threshold
    count = np.bincount
    n = group.max() + 1
    tp = count(group, weights=kept & relevant, minlength=n)
    fp = count(group, weights=kept & ~relevant, minlength=n)
    fn = count(group, weights=~kept & relevant, minlength=n)

    def statistic(sample: np.ndarray, axis: int = -1) -> np.ndarray:
        t, f, m = tp[sample].sum(axis), fp[sample].sum(axis), fn[sample].sum(axis)
        precision = np.divide(t, t + f, out=np.zeros_like(t), where=t + f > 0)
        recall = np.divide(t, t + m, out=np.zeros_like(t), where=t + m > 0)
        f1 = np.divide(2 * t, 2 * t + f + m, out=np.zeros_like(t), where=2 * t + f + m > 0)
        return np.stack([precision, recall, f1])

    result = stats.bootstrap((np.arange(n),), statistic, n_resamples=RESAMPLES, vectorized=True,
                             confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {name: (float(low[i]), float(high[i])) for i, name in enumerate(("precision", "recall", "f1"))}


def fit_platt(logits: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
    """Platt scaling: a >= 0 and b of `sigmoid(a * logit + b)` by maximum likelihood.

    The targets are Platt's (1999) smoothed ones, (N+ + 1) / (N+ + 2) and 1 / (N- + 2), which keep a
    separable set from sending a to infinity. The slope is held at 0 or more, so that a calibration never
    reverses the model's order; 0 means the scores say nothing about relevance on this data.
    """
    positives = int(relevant.sum())
    negatives = len(relevant) - positives
    target = np.where(relevant, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    x = logits.astype(np.float64)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = params[0] * x + params[1]
        value = np.sum(target * np.logaddexp(0, -z) + (1 - target) * np.logaddexp(0, z))
        residual = np.exp(-np.logaddexp(0, -z)) - target
        return float(value), np.array([np.sum(residual * x), np.sum(residual)])

    fitted = optimize.minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                               bounds=[(0.0, None), (None, None)])
    return float(fitted.x[0]), float(fitted.x[1])


def reliability(probabilities: np.ndarray, relevant: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean score and share relevant in each non-empty bin of equal width, and the expected calibration error."""
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    present = counts > 0
    predicted = np.bincount(index, weights=probabilities, minlength=bins)[present] / counts[present]
    observed = np.bincount(index, weights=relevant.astype(float), minlength=bins)[present] / counts[present]
    ece = float(np.sum(counts[present] / len(probabilities) * np.abs(predicted - observed)))
    return predicted, observed, ece
