"""Run encoded pairs through a backend: token-budget batches, OOM recovery, finite logits."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rerankd.engine.batching import collate, length_groups, plan_batches
from rerankd.engine.encoding import EncodedPair
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.backend import Backend

log = logging.getLogger(__name__)

# The fixed cost of one more forward pass on a CPU, in padded tokens (see `BatchScorer.pass_tokens`): a pass
# of the mini shape costs about 7 ms on 2 EPYC cores, 45 tokens' worth; deeper, wider models fewer.
CPU_PASS_TOKENS = 64


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Relevance in 0..1, computed in float64 from the fp32 logit: no ties near 0 and 1, no overflow."""
    x = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


@dataclass
class BatchStats:
    """What one `score` call cost: batches run, padded tokens paid for, seconds in the model."""

    batches: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0


class BatchScorer:
    """Scores pairs in token-budget batches and returns fp32 logits in input order."""

    def __init__(
        self,
        backend: Backend,
        pad_id: int,
        with_token_types: bool,
        max_batch_tokens: int,
        max_batch_size: int,
        pad_to_multiple_of: int = 1,
        pass_tokens: int | None = None,
    ) -> None:
        self.backend = backend
        self.pad_id = pad_id
        self.with_token_types = with_token_types
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.pad_to_multiple_of = pad_to_multiple_of
        # Where a pass costs about its padded tokens (a CPU), the fixed cost of one more pass in tokens: a batch
        # of very different lengths then runs as several narrower passes. None: every batch is one pass.
        self.pass_tokens = pass_tokens

    def score(
        self, pairs: Sequence[EncodedPair], on_batch: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, BatchStats]:
        """Logits of `pairs` in their order; `on_batch(rows)` is called after each batch."""
        logits = np.empty(len(pairs), dtype=np.float32)
        stats = BatchStats()
        plan = plan_batches(
            [p.num_tokens for p in pairs], self.max_batch_tokens, self.max_batch_size, self.pad_to_multiple_of
        )
        for indices in plan:
            started = time.perf_counter()
            logits[indices] = self.run_batch([pairs[i] for i in indices], stats)
            stats.seconds += time.perf_counter() - started
            if on_batch is not None:
                on_batch(len(indices))
        check_finite(logits)
        return logits, stats

    def run_batch(self, pairs: Sequence[EncodedPair], stats: BatchStats | None = None) -> np.ndarray:
        """One batch, as one pass or (see `pass_tokens`) as passes of similar length."""
        if self.pass_tokens is None or len(pairs) < 2:
            return self._run_pass(pairs, stats)
        groups = length_groups([p.num_tokens for p in pairs], self.pass_tokens, self.pad_to_multiple_of)
        if len(groups) == 1:
            return self._run_pass(pairs, stats)
        logits = np.empty(len(pairs), dtype=np.float32)
        for group in groups:
            logits[group] = self._run_pass([pairs[i] for i in group], stats)
        return logits

    def _run_pass(self, pairs: Sequence[EncodedPair], stats: BatchStats | None = None) -> np.ndarray:
        """One forward pass; if it runs out of memory, its halves are tried, down to single pairs."""
        batch = collate(pairs, self.pad_id, self.with_token_types, self.pad_to_multiple_of)
        try:
            out = self.backend.forward(batch)
        except Exception as exc:
            if not self.backend.is_out_of_memory(exc):
                raise
            self.backend.release_memory()
            rows, width = batch["input_ids"].shape
            if rows == 1:
                raise RerankdError(
                    ErrorKind.INFERENCE,
                    f"out of memory on a single pair of {width} tokens on {self.backend.device}; "
                    "lower --max-length or run on a device with more memory",
                ) from exc
            log.warning(
                "out of memory on a batch of %d x %d tokens on %s; retrying in halves "
                "(lower --max-batch-tokens to avoid this)",
                rows,
                width,
                self.backend.device,
            )
            half = math.ceil(rows / 2)
            return np.concatenate([self._run_pass(pairs[:half], stats), self._run_pass(pairs[half:], stats)])
        if stats is not None:
            stats.batches += 1
            stats.padded_tokens += batch["input_ids"].size
        return np.asarray(out, dtype=np.float32)


def check_finite(logits: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(logits))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise RerankdError(
            ErrorKind.INFERENCE,
            f"the model produced a non-finite logit (NaN or infinity) for {bad.size} pair(s) (indices {shown}); "
            "no score is returned for them. In fp16 this usually means an overflow: try --dtype bf16 or fp32",
        )
