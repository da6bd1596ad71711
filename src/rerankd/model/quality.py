"""The INT8 quality gate: a quantised model must rank a fixed reference set like its fp32 original.

Dynamic INT8 can turn a cross-encoder's output to near noise (outlier activation
channels blow up the per-tensor scale), and the scores still look like scores.
So before an INT8 model is written or served, both models score the same pairs
and the Spearman rank correlation of their logits must reach a bound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from rerankd.corpus import corpus_lines
from rerankd.errors import ErrorKind, RerankdError

log = logging.getLogger(__name__)

# Our random-weight fixtures (mini to m3 shapes) keep 0.95-0.99 under dynamic INT8 (docs/backends.md);
# a broken quantisation lands near 0. No real model could be measured here.
MIN_SPEARMAN = 0.9
# The extensions CPU INT8 kernels choose between (x86, then Arm). The gate's verdict names them because the
# same INT8 model can round differently on another CPU: without VNNI, x86 multiplies u8 by s8 with VPMADDUBSW,
# whose 16-bit pair sums saturate on full-range weights (docs/backends.md).
_INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")
_QUERIES = 6
_DOCUMENTS_PER_QUERY = 6


@cache
def reference_pairs() -> tuple[tuple[str, str], ...]:
    """36 fixed (query, document) pairs in English and Chinese, short so the gate stays cheap on big models."""
    lines = corpus_lines()
    step = len(lines) // (_QUERIES + _QUERIES * _DOCUMENTS_PER_QUERY)
    picked = lines[::step]
    queries = [" ".join(line.split()[:8]) if " " in line else line[:16] for line in picked[:_QUERIES]]
    documents = picked[_QUERIES:]
    return tuple(
        (query, documents[q * _DOCUMENTS_PER_QUERY + d])
        for q, query in enumerate(queries)
        for d in range(_DOCUMENTS_PER_QUERY)
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    ranks = [_average_ranks(np.asarray(x, dtype=np.float64)) for x in (a, b)]
    if min(r.std() for r in ranks) == 0:
        return 0.0
    return float(np.corrcoef(*ranks)[0, 1])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(x[order])) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end - 1) / 2
    return ranks


@cache
def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This CPU's INT8-relevant extensions, from /proc/cpuinfo (e.g. "avx2, avx512f, avx512_vnni"), or "unknown"."""
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux
        return "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            found = [flag for flag in _INT8_CPU_FLAGS if flag in value.split()]
            return ", ".join(found) if found else "none of " + ", ".join(_INT8_CPU_FLAGS)
    return "unknown"


@dataclass(frozen=True)
class QualityReport:
    spearman: float
    max_abs_logit_diff: float
    pairs: int
    cpu: str = field(default_factory=cpu_features)

    def __str__(self) -> str:
        return (f"Spearman {self.spearman:.4f} against fp32 on {self.pairs} reference pairs "
                f"(max |logit difference| {self.max_abs_logit_diff:.3g}; CPU: {self.cpu})")


def compare(fp32: np.ndarray, quantised: np.ndarray) -> QualityReport:
    return QualityReport(spearman(fp32, quantised), float(np.max(np.abs(fp32 - quantised))), len(fp32))


def enforce(report: QualityReport, what: str, min_spearman: float, force: bool) -> None:
    """Refuse a quantised model that ranks unlike its original, unless forced."""
    if report.spearman >= min_spearman:
        log.info("%s passes the INT8 quality gate: %s", what, report)
        return
    message = (f"{what} ranks unlike the fp32 model: {report}, below the bound of {min_spearman}. "
               "INT8 would give near-random rankings with this model")
    if force:
        log.warning("%s; kept because it was forced", message)
        return
    raise RerankdError(ErrorKind.MODEL_LOAD, message + "; use fp32, or --force to keep it anyway")
