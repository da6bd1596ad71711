"""One dynamic batcher per model, shared by all requests.

Requests put their encoded pairs in one queue. A single model thread takes
everything queued, sorts it by length across requests, cuts it into
token-budget batches and runs them; each request resolves as soon as its last
pair is scored, while later batches run on. New requests queue up meanwhile
and form the next round, so nothing waits longer than one round. Requests whose
client went away or timed out are skipped before each batch. The thread sleeps
on a condition variable when idle: no polling.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rerankd.engine import BatchScorer, EncodedPair, plan_batches
from rerankd.engine.scoring import check_finite
from rerankd.errors import ErrorKind, RerankdError
from rerankd.server.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchedScores:
    logits: np.ndarray
    queue_seconds: float
    inference_seconds: float


class _Job:
    """One request's pairs on their way through the model."""

    __slots__ = (
        "cancelled",
        "enqueued",
        "failed",
        "future",
        "logits",
        "loop",
        "pairs",
        "remaining",
        "started",
    )

    def __init__(self, pairs: Sequence[EncodedPair], loop: asyncio.AbstractEventLoop) -> None:
        self.pairs = pairs
        self.loop = loop
        self.future: asyncio.Future[BatchedScores] = loop.create_future()
        self.logits = np.empty(len(pairs), dtype=np.float32)
        self.remaining = len(pairs)
        self.enqueued = time.perf_counter()
        self.started: float | None = None
        self.cancelled = False
        self.failed = False

    def resolve(self) -> None:
        try:
            check_finite(self.logits)
        except RerankdError as exc:
            self.fail(exc)
            return
        now = time.perf_counter()
        started = self.started if self.started is not None else now
        result = BatchedScores(self.logits, started - self.enqueued, now - started)
        self.loop.call_soon_threadsafe(_settle, self.future, result, None)

    def fail(self, exc: BaseException) -> None:
        self.failed = True
        self.loop.call_soon_threadsafe(_settle, self.future, None, exc)


def _settle(future: asyncio.Future, result: BatchedScores | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class DynamicBatcher:
    """Merges pairs of concurrent requests into length-grouped, token-budget batches."""

    def __init__(self, scorer: BatchScorer, max_queued_pairs: int, metrics: Metrics, model_name: str) -> None:
        self.scorer = scorer
        self.max_queued_pairs = max_queued_pairs
        self.metrics = metrics
        self.model_name = model_name
        self._queue: list[_Job] = []
        self._running: list[_Job] = []  # the round in the model now
        self._queued_pairs = 0  # waiting or running
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"rerankd-model-{model_name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    @property
    def queued_pairs(self) -> int:
        return self._queued_pairs

    async def score(self, pairs: Sequence[EncodedPair]) -> BatchedScores:
        """Logits of `pairs` in order. Cancelling the await drops the pairs still queued."""
        if not pairs:
            return BatchedScores(np.empty(0, dtype=np.float32), 0.0, 0.0)
        job = _Job(pairs, asyncio.get_running_loop())
        with self._wake:
            if self._stopping:
                raise RerankdError(ErrorKind.TIMEOUT, "the server is shutting down")
            if self._queued_pairs + len(pairs) > self.max_queued_pairs:
                raise RerankdError(
                    ErrorKind.OVERLOADED,
                    f"the server is busy: {self._queued_pairs} pairs are queued and this request adds {len(pairs)}, "
                    f"over the limit of {self.max_queued_pairs}; retry shortly",
                )
            self._queue.append(job)
            self._queued_pairs += len(pairs)
            self.metrics.queue_pairs.labels(self.model_name).set(self._queued_pairs)
            self._wake.notify()
        try:
            return await job.future
        finally:
            # Client gone, timed out, or done: either way the model thread may skip what is left.
            job.cancelled = True

    def fail_all(self, exc: BaseException) -> None:
        """Answer every queued or running request with `exc` (the drain deadline passed); the round skips them."""
        with self._wake:
            jobs = [*self._running, *self._queue]
        for job in jobs:
            if job.remaining and not job.failed:
                job.fail(exc)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    return
                jobs, self._queue = self._queue, []
                self._running = jobs
            try:
                self._run_round(jobs)
            except BaseException as exc:  # never let the model thread die: fail this round's requests
                log.exception("model round failed")
                for job in jobs:
                    if job.remaining and not job.failed:
                        job.fail(exc)
            finally:
                with self._wake:
                    self._running = []
                    self._queued_pairs -= sum(len(j.pairs) for j in jobs)
                    self.metrics.queue_pairs.labels(self.model_name).set(self._queued_pairs)

    def _run_round(self, jobs: list[_Job]) -> None:
        entries = [(job, i) for job in jobs if not job.cancelled for i in range(len(job.pairs))]
        plan = plan_batches(
            [job.pairs[i].num_tokens for job, i in entries],
            self.scorer.max_batch_tokens,
            self.scorer.max_batch_size,
            self.scorer.pad_to_multiple_of,
        )
        for indices in plan:
            batch = [entries[k] for k in indices if not (entries[k][0].cancelled or entries[k][0].failed)]
            if not batch:
                continue
            started = time.perf_counter()
            for job, _ in batch:
                if job.started is None:
                    job.started = started
                    self.metrics.queue_seconds.labels(self.model_name).observe(started - job.enqueued)
            pairs = [job.pairs[i] for job, i in batch]
            try:
                logits = self.scorer.run_batch(pairs)
            except Exception as exc:
                log.warning("a batch of %d pairs failed: %s", len(pairs), exc)
                for job in {id(j): j for j, _ in batch}.values():
                    job.fail(exc)
                continue
            self.metrics.observe_batch(self.model_name, pairs, time.perf_counter() - started)
            for (job, i), logit in zip(batch, logits, strict=True):
                job.logits[i] = logit
                job.remaining -= 1
                if job.remaining == 0:
                    job.resolve()
