"""Out-of-memory recovery, non-finite logits and the fp32-or-better sigmoid."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import PAIRS

from rerankd.engine import sigmoid
from rerankd.errors import ErrorKind, RerankdError


class FlakyBackend:
    """Wraps a real backend and raises the CUDA OOM error torch raises, for batches over `max_rows` rows."""

    def __init__(self, inner, max_rows: int) -> None:
        self.inner = inner
        self.max_rows = max_rows
        self.name, self.device, self.dtype = inner.name, inner.device, inner.dtype
        self.released = 0
        self.batch_rows: list[int] = []

    def forward(self, inputs):
        rows = inputs["input_ids"].shape[0]
        if rows > self.max_rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        self.batch_rows.append(rows)
        return self.inner.forward(inputs)

    def is_out_of_memory(self, exc):
        return self.inner.is_out_of_memory(exc)

    def release_memory(self):
        self.released += 1


@pytest.fixture
def swap_backend(reranker):
    original = reranker.scorer.backend
    yield lambda backend: setattr(reranker.scorer, "backend", backend)
    reranker.scorer.backend = original


def test_out_of_memory_batches_are_retried_in_smaller_pieces(reranker, swap_backend):
    expected = reranker.compute_score(PAIRS)
    flaky = FlakyBackend(reranker.scorer.backend, max_rows=2)
    swap_backend(flaky)
    scores = reranker.compute_score(PAIRS)
    assert max(abs(a - b) for a, b in zip(scores, expected)) < 1e-6
    assert flaky.released > 0 and max(flaky.batch_rows) <= 2


def test_out_of_memory_on_a_single_pair_is_a_clear_error(reranker, swap_backend):
    swap_backend(FlakyBackend(reranker.scorer.backend, max_rows=0))
    with pytest.raises(RerankdError, match="out of memory on a single pair") as info:
        reranker.compute_score(PAIRS[:3])
    assert info.value.kind is ErrorKind.INFERENCE


def test_other_backend_errors_are_not_swallowed(reranker, swap_backend):
    class Broken(FlakyBackend):
        def forward(self, inputs):
            raise ValueError("boom")

    swap_backend(Broken(reranker.scorer.backend, max_rows=100))
    with pytest.raises(ValueError, match="boom"):
        reranker.compute_score(PAIRS[:2])


def test_a_nan_logit_raises_instead_of_becoming_a_score(reranker, swap_backend):
    class NaNBackend(FlakyBackend):
        def forward(self, inputs):
            out = self.inner.forward(inputs)
            out[0] = np.nan
            return out

    swap_backend(NaNBackend(reranker.scorer.backend, max_rows=100))
    with pytest.raises(RerankdError, match="non-finite logit"):
        reranker.compute_score(PAIRS)


def test_sigmoid_keeps_extreme_logits_apart_without_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = sigmoid(np.array([-1000.0, -20.0, -19.0, 0.0, 19.0, 20.0, 1000.0], dtype=np.float32))
    assert values[0] == 0.0 and values[-1] == 1.0 and values[3] == 0.5
    assert values[1] < values[2] and values[4] < values[5] < 1.0
    # In fp16 these would all be exactly 1.0.
    assert len(set(sigmoid(np.array([8.0, 9.0, 10.0], dtype=np.float16)).tolist())) == 3
