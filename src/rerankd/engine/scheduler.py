"""The scheduler at the core of serving: one queue and one model thread per model, shared by every request.

When the model is free, the model thread builds the next batch from what is
queued now; a request is answered as soon as its last pair is scored.

Which pairs go next is decided by `FairQueue`, a start-time fair queue over
tokens whose flows are size classes (requests within a factor of 4 of each
other in tokens):

- Within a class, requests are served in the order they came. Equal requests
  under overload then finish within the wait that admission allowed them,
  where sharing the model between all of them would stretch every one.
- Classes share the model equally: each pair gets a virtual start tag, the
  class's flow continues in virtual time where its last request ends, and
  virtual time runs as under ideal processor sharing between the classes with
  work. A 4-document request that arrives behind a 300-document one starts
  at the current virtual time, so it is served from the next batch on; a
  stream of small requests can't starve a big one either, which keeps its half.
- A small request (one that fits in one batch) goes into a batch whole, with
  the small requests after it that fit beside it, so it finishes in one batch
  whatever the lengths of its pairs.
- A big request's pairs go longest first (as FlagEmbedding orders them). The
  pair with the smallest tag anchors the batch, which is filled with the pairs
  closest below it in length from a look-ahead window of the next pairs in tag
  order, a few batch budgets deep: batches stay nearly unpadded without sorting
  across everything queued, which made every request wait for the slowest one.

Deadlines decide expiry: a request past its deadline is failed before the next
batch and its pairs dropped. Cancelling a request (client gone, timeout) drops
its pairs at once. A batch that raises fails only the requests whose pairs
were in it. The thread sleeps on a condition variable when idle: no polling.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

from rerankd.engine.batching import padded_length
from rerankd.engine.encoding import EncodedPair
from rerankd.engine.scoring import BatchScorer, BatchStats, check_finite
from rerankd.errors import ErrorKind, RerankdError
from rerankd.telemetry import NO_METRICS, EngineMetrics

log = logging.getLogger(__name__)

# How far past the most urgent pair a batch may reach, in batch budgets: deep enough to find pairs of
# similar length (8 queued 32-document requests pad about 9% over their real tokens at the CPU budget,
# against 2% for a sort of everything queued; a closed loop of 8 clients about 8%), shallow enough that a
# request is not held back by much of the work queued after it (a deeper window lengthens every request's
# stay by about its depth).
WINDOW_BATCHES = 4
# Time constants of the throughput averages, in seconds of model time. Batches of long pairs run slower per
# token than batches of short ones, so over a few seconds the speed swings with the mix, and a minute
# averages that out; but a machine that slows down (a noisy neighbour) is seen by a short average first.
# Admission takes the lower of the two, so that its estimate of the wait ahead errs on the short side.
# Where batches take milliseconds, each still counts for at least a share of a horizon's worth of
# batches, so a fast model's estimate settles within seconds of its start.
THROUGHPUT_HORIZONS = ((10.0, 20), (60.0, 200))  # (seconds, batches)


# Requests within a factor of 4 of each other in tokens are one flow of the fair queue, served in order;
# flows share the model equally. Wide enough that requests of one workload (32 documents of mixed length)
# mostly land in one class, narrow enough that a 4-document request is never a flow with a 32-document one.
def size_class(tokens: int) -> int:
    """floor(log4(tokens)): 256-1023 tokens is one class, 1024-4095 the next, and so on."""
    return (max(tokens, 1).bit_length() - 1) // 2


@dataclass(frozen=True)
class BatchedScores:
    """One request's logits in input order, and the time it waited and then spent in the model."""

    logits: np.ndarray
    queue_seconds: float
    inference_seconds: float


class Job:
    """One request's pairs on their way through the model; `future` resolves with its `BatchedScores`."""

    __slots__ = (
        "deadline", "enqueued", "finished", "future", "logits", "pairs", "pending", "pending_tokens", "remaining",
        "seq", "size_class", "started", "tokens", "unscored_tokens",
    )

    def __init__(self, seq: int, pairs: Sequence[EncodedPair], enqueued: float, deadline: float | None) -> None:
        self.seq = seq
        self.pairs = pairs
        self.enqueued = enqueued
        self.deadline = deadline
        self.future: Future[BatchedScores] = Future()
        self.logits = np.empty(len(pairs), dtype=np.float32)
        self.remaining = len(pairs)  # not yet scored (pending or in the running batch)
        self.tokens = sum(p.num_tokens for p in pairs)
        self.unscored_tokens = self.tokens
        self.size_class = 0
        self.pending: list[_Entry] = []  # not yet in a batch, by tag
        self.pending_tokens = 0
        self.started: float | None = None
        self.finished = False


class _Entry:
    """One pair waiting for a batch, with its virtual start tag."""

    __slots__ = ("index", "job", "tag", "tokens")

    def __init__(self, tag: float, job: Job, index: int, tokens: int) -> None:
        self.tag = tag
        self.job = job
        self.index = index
        self.tokens = tokens

    def order(self) -> tuple[float, int, int]:
        return self.tag, self.job.seq, self.index


class FairQueue:
    """Queued requests and the choice of the next batch; no threads and no clock, so tests can step it.

    Args:
        max_batch_tokens: Budget of one batch, counted as rows x widest row (padding included).
        max_batch_size: Most rows in one batch.
        pad_to_multiple_of: Rows are padded to a multiple of this (8 on CUDA).
        window_batches: Depth of the look-ahead window, in batch budgets.
    """

    def __init__(
        self, max_batch_tokens: int, max_batch_size: int, pad_to_multiple_of: int = 1,
        window_batches: int = WINDOW_BATCHES,
    ) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.pad_to_multiple_of = pad_to_multiple_of
        self.window_tokens = window_batches * max_batch_tokens
        self._jobs: dict[int, Job] = {}  # jobs with pairs not yet in a batch, in arrival order
        self._virtual_time = 0.0
        self._flow_ends: dict[int, float] = {}  # size class -> virtual end of its last request
        self.pending_pairs = 0
        self.pending_tokens = 0

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def jobs(self) -> Iterable[Job]:
        return self._jobs.values()

    def add(self, job: Job) -> None:
        """Queue `job`'s pairs, longest first, in its size class's flow: after the class's last request in
        virtual time, or now if the class has fallen behind."""
        job.size_class = size_class(job.tokens)
        start = max(self._virtual_time, self._flow_ends.get(job.size_class, 0.0))
        tag = start
        for index in sorted(range(len(job.pairs)), key=lambda i: -job.pairs[i].num_tokens):
            tokens = job.pairs[index].num_tokens
            job.pending.append(_Entry(tag, job, index, tokens))
            tag += tokens
        job.pending_tokens = tag - start
        self._flow_ends[job.size_class] = tag
        if job.pending:
            self._jobs[job.seq] = job
            self.pending_pairs += len(job.pending)
            self.pending_tokens += job.pending_tokens

    def remove(self, job: Job) -> None:
        """Drop whatever of `job` has not gone into a batch yet."""
        if self._jobs.pop(job.seq, None) is not None:
            self.pending_pairs -= len(job.pending)
            self.pending_tokens -= job.pending_tokens
        job.pending = []
        job.pending_tokens = 0

    def next_batch(self) -> list[_Entry]:
        """Take the next batch out of the queue (empty when nothing is queued)."""
        if not self._jobs:
            return []
        window = self._window()
        head = window[0].tag
        # Equal tags mean requests that arrived at the same point in virtual time: the one with the least
        # left to do goes first, so a short request that lands beside a long one finishes first.
        anchor = min((e for e in window if e.tag == head), key=lambda e: (e.job.pending_tokens, e.job.seq))
        batch = self._whole(anchor.job, window) or self._around(anchor, window)
        # Virtual time runs as under ideal processor sharing between the size classes with work queued: each
        # gets an equal part of the tokens served. A class that had none starts there, so it neither jumps the
        # classes that have waited for their share nor waits behind those that have had more than theirs.
        flows = len({job.size_class for job in self._jobs.values()})
        self._virtual_time = max(head, self._virtual_time + sum(e.tokens for e in batch) / flows)
        self._take(batch)
        return batch

    def _width(self, tokens: int) -> int:
        return padded_length(tokens, self.pad_to_multiple_of)

    def _window(self) -> list[_Entry]:
        """The pairs with the smallest tags, until they hold `window_tokens` tokens."""
        window: list[_Entry] = []
        tokens = 0
        for entry in heapq.merge(*(job.pending for job in self._jobs.values()), key=_Entry.order):
            window.append(entry)
            tokens += entry.tokens
            if tokens >= self.window_tokens:
                break
        return window

    def _is_unit(self, job: Job) -> bool:
        """A request small enough for one batch, not yet started: it is served whole, never piecemeal."""
        rest = job.pending
        return (len(rest) == len(job.pairs) and len(rest) <= self.max_batch_size
                and len(rest) * self._width(rest[0].tokens) <= self.max_batch_tokens)

    def _whole(self, job: Job, window: list[_Entry]) -> list[_Entry] | None:
        """A small request goes in whole, so it finishes in one batch whatever the lengths of its pairs,
        with the small requests after it in the window that fit beside it.

        No pairs of big requests ride along: on a CPU they would only make the batch, and so the small
        requests in it, take longer. (The tail of a big request is not treated so: its pairs are grouped
        by length with the others'.)"""
        if not self._is_unit(job):
            return None
        batch = list(job.pending)
        width = self._width(batch[0].tokens)
        seen = {job.seq}
        for entry in window:
            other = entry.job
            if other.seq in seen or not self._is_unit(other):
                continue
            seen.add(other.seq)
            wider = max(width, self._width(other.pending[0].tokens))
            rows = len(batch) + len(other.pending)
            if rows <= self.max_batch_size and rows * wider <= self.max_batch_tokens:
                batch.extend(other.pending)
                width = wider
        return batch

    def _around(self, anchor: _Entry, window: list[_Entry]) -> list[_Entry]:
        """The anchor and the pairs of the window closest below it in length, as many as the budget holds.

        The anchor is the longest pair its request has left, so the batch is as wide as it and no wider;
        the rest are the pairs that fill that width best, the earliest in the fair order first among
        equals. Small requests are left out: they go whole when their turn comes.
        """
        ordered = sorted((e for e in window if e is anchor or not self._is_unit(e.job)),
                         key=lambda e: (-e.tokens, e.order()))
        at = next(i for i, e in enumerate(ordered) if e is anchor)
        rows = max(1, min(self.max_batch_size, self.max_batch_tokens // self._width(anchor.tokens)))
        return ordered[at : at + rows]

    def _take(self, batch: list[_Entry]) -> None:
        by_job: dict[int, set[int]] = {}
        for entry in batch:
            by_job.setdefault(entry.job.seq, set()).add(id(entry))
        for seq, ids in by_job.items():
            job = self._jobs[seq]
            kept = [e for e in job.pending if id(e) not in ids]
            taken_tokens = job.pending_tokens - sum(e.tokens for e in kept)
            self.pending_pairs -= len(job.pending) - len(kept)
            self.pending_tokens -= taken_tokens
            job.pending = kept
            job.pending_tokens -= taken_tokens
            if not kept:
                del self._jobs[seq]


class ThroughputMeter:
    """Tokens per second of model time: the lower of a short and a long moving average over batches."""

    def __init__(self, tokens_per_second: float = 1.0) -> None:
        self._averages = [tokens_per_second] * len(THROUGHPUT_HORIZONS)

    @property
    def tokens_per_second(self) -> float:
        return min(self._averages)

    @tokens_per_second.setter
    def tokens_per_second(self, value: float) -> None:
        self._averages = [value] * len(THROUGHPUT_HORIZONS)

    def observe(self, tokens: int, seconds: float) -> None:
        if seconds <= 0:
            return
        rate = tokens / seconds
        for i, (horizon_seconds, horizon_batches) in enumerate(THROUGHPUT_HORIZONS):
            weight = 1.0 - math.exp(-max(seconds / horizon_seconds, 1 / horizon_batches))
            self._averages[i] += weight * (rate - self._averages[i])


@dataclass(frozen=True)
class QueueState:
    """A snapshot of one scheduler's queue, for admission and metrics."""

    requests: int  # queued or running
    pairs: int  # not yet scored
    tokens: int  # not yet scored
    oldest_seconds: float  # age of the oldest request not yet answered
    tokens_per_second: float

    @property
    def seconds_of_work(self) -> float:
        """How long the work not yet scored takes at the measured throughput."""
        return self.tokens / self.tokens_per_second


class Scheduler:
    """One model's queue and model thread.

    Args:
        scorer: Runs one batch (with out-of-memory halving).
        name: The served model's name, for metrics and the thread's name.
        metrics: Where batch and queue measurements go.
        clock: Monotonic seconds; tests pass a fake one to test deadlines without sleeping.
    """

    def __init__(
        self,
        scorer: BatchScorer,
        name: str,
        metrics: EngineMetrics = NO_METRICS,
        clock: Callable[[], float] = time.monotonic,
        window_batches: int = WINDOW_BATCHES,
    ) -> None:
        self.scorer = scorer
        self.name = name
        self.metrics = metrics
        self.clock = clock
        self.throughput = ThroughputMeter()
        self._queue = FairQueue(scorer.max_batch_tokens, scorer.max_batch_size, scorer.pad_to_multiple_of,
                                window_batches)
        self._unanswered: dict[int, Job] = {}  # queued or running, in arrival order
        self._running_pairs = 0
        self._running_tokens = 0
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._died: str | None = None
        self._last_progress = clock()
        self._thread = threading.Thread(target=self._run, name=f"rerankd-model-{name}", daemon=True)

    # --- the requests' side ------------------------------------------------------------------------

    def start(self, tokens_per_second: float) -> None:
        """Start the model thread; `tokens_per_second` (measured by the warm-up) seeds the throughput."""
        self.throughput.tokens_per_second = tokens_per_second
        self._thread.start()

    def submit(self, pairs: Sequence[EncodedPair], deadline: float | None = None) -> Job:
        """Queue `pairs`; the returned job's `future` resolves with their logits in order.

        Call `cancel(job)` when the caller stops waiting, whatever the reason: it is a no-op once the
        job is done, and otherwise drops its pairs at once.
        """
        job = Job(next(self._seq), pairs, self.clock(), deadline)
        if not pairs:
            job.future.set_result(BatchedScores(np.empty(0, dtype=np.float32), 0.0, 0.0))
            return job
        with self._wake:
            if self._died is not None:
                raise RerankdError(ErrorKind.TIMEOUT, self._died)
            if self._stopping:
                raise RerankdError(ErrorKind.TIMEOUT, "the server is shutting down; retry on another replica")
            if not self._unanswered:
                self._last_progress = job.enqueued  # the stall clock starts when work arrives at an idle model
            self._queue.add(job)
            self._unanswered[job.seq] = job
            self._report()
            self._wake.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Stop working on `job`: its pairs not yet in a batch are dropped now; the running batch ignores it."""
        with self._wake:
            self._drop(job)
        job.future.cancel()

    def fail_all(self, exc: BaseException) -> None:
        """Answer every queued or running request with `exc` (the drain deadline passed)."""
        with self._wake:
            jobs = list(self._unanswered.values())
            for job in jobs:
                self._drop(job)
        for job in jobs:
            _settle(job.future, exc=exc)

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, fail what is queued, let the running batch end, and stop the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self.fail_all(RerankdError(ErrorKind.TIMEOUT, "the server shut down before this request finished; retry"))
        if self._thread.is_alive():
            self._thread.join(timeout)

    def state(self) -> QueueState:
        with self._wake:
            return self._state()

    def work_ahead(self, tokens: int, admitted: Iterable[int] = ()) -> int:
        """Tokens the model serves before a new request of `tokens` tokens would finish, counting the
        requests queued or running and those `admitted` (their sizes) but not yet queued.

        Its size class's requests go first, in order; every other class with work gets as much as this
        class until it runs out. Behind a 300-document request a 4-document one waits for about its own
        size again; behind requests of its own size, for all of them.

        The look-ahead window mixes a request's last pairs with the work queued after it, so it is answered
        up to a window of work later than its own work alone would take: its own tokens count too, up to
        one window (under sustained overload this keeps the served p99 within the wait limit plus its
        service). With nothing ahead it starts at once, so an idle model never refuses for the wait.
        """
        backlog: dict[int, int] = {}
        for size in admitted:
            backlog[size_class(size)] = backlog.get(size_class(size), 0) + size
        with self._wake:
            for job in self._unanswered.values():
                backlog[job.size_class] = backlog.get(job.size_class, 0) + job.unscored_tokens
        own = backlog.pop(size_class(tokens), 0)
        ahead = own + sum(min(other, own + tokens) for other in backlog.values())
        return ahead + min(tokens, self._queue.window_tokens) if ahead else 0

    def health(self, stall_timeout: float) -> str | None:
        """Why this model can't serve, or None: its thread died, or it has finished no batch for
        `stall_timeout` seconds while work was waiting."""
        if self._died is not None or (self._thread.ident is not None and not self._thread.is_alive()
                                      and not self._stopping):
            return "the model thread has died"
        with self._wake:
            stalled = self.clock() - self._last_progress if self._unanswered else 0.0
        if stalled > stall_timeout:
            return f"the model has finished no batch for {stalled:.0f} s with work waiting (--stall-timeout)"
        return None

    def report(self) -> None:
        """Push the queue's state to the metrics (the oldest request's age grows while nothing happens)."""
        with self._wake:
            self._report()

    # --- the model thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - the thread ends either way; say why first
            # A bug here must not leave requests hanging until their timeout: answer them, and let /health
            # tell the orchestrator to restart the process.
            log.exception("the model thread of %s died", self.name)
            with self._wake:
                self._died = f"the model thread died ({type(exc).__name__}: {exc}); the server must be restarted"
            self.fail_all(RerankdError(ErrorKind.TIMEOUT, self._died))

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not len(self._queue):
                    self._wake.wait()
                if self._stopping:
                    return
                self._expire()
                batch = self._queue.next_batch()
                if not batch:
                    continue
                self._running_pairs = len(batch)
                self._running_tokens = sum(e.tokens for e in batch)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Entry]) -> None:
        started = self.clock()
        for entry in batch:
            job = entry.job
            if job.started is None:
                job.started = started
                self.metrics.observe_queue_wait(self.name, started - job.enqueued)
        stats = BatchStats()
        try:
            logits = self.scorer.run_batch([e.job.pairs[e.index] for e in batch], stats)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not take the model thread down
            log.warning("a batch of %d pairs failed: %s: %s", len(batch), type(exc).__name__, exc)
            failed = {e.job.seq: e.job for e in batch}.values()
            with self._wake:
                for job in failed:
                    self._drop(job)
                self._batch_done(started, batch, stats, count=False)
            for job in failed:
                _settle(job.future, exc=exc)
            return
        done: list[Job] = []
        with self._wake:
            for entry, logit in zip(batch, logits, strict=True):
                job = entry.job
                if job.finished:  # cancelled, failed or expired while the batch ran
                    continue
                job.logits[entry.index] = logit
                job.remaining -= 1
                job.unscored_tokens -= entry.tokens
                if job.remaining == 0:
                    job.finished = True
                    del self._unanswered[job.seq]
                    done.append(job)
            self._batch_done(started, batch, stats, count=True)
        finished = self.clock()
        for job in done:
            _resolve(job, finished)

    def _batch_done(self, started: float, batch: list[_Entry], stats: BatchStats, count: bool) -> None:
        """Bookkeeping after a batch, under the lock."""
        seconds = self.clock() - started
        tokens = sum(e.tokens for e in batch)
        if count:
            self.throughput.observe(tokens, seconds)
            self.metrics.observe_batch(self.name, len(batch), stats.padded_tokens, seconds)
        self._running_pairs = self._running_tokens = 0
        self._last_progress = self.clock()
        self._report()

    def _expire(self) -> None:
        now = self.clock()
        expired = [job for job in self._queue.jobs if job.deadline is not None and job.deadline <= now]
        for job in expired:
            self._drop(job)
            _settle(job.future, exc=RerankdError(
                ErrorKind.TIMEOUT, "the request did not finish before its deadline (--request-timeout)"))

    def _drop(self, job: Job) -> None:
        """Forget `job`, under the lock."""
        if job.finished:
            return
        job.finished = True
        self._queue.remove(job)
        self._unanswered.pop(job.seq, None)
        self._report()

    def _state(self) -> QueueState:
        oldest = next(iter(self._unanswered.values()), None)
        return QueueState(
            requests=len(self._unanswered),
            pairs=self._queue.pending_pairs + self._running_pairs,
            tokens=self._queue.pending_tokens + self._running_tokens,
            oldest_seconds=self.clock() - oldest.enqueued if oldest is not None else 0.0,
            tokens_per_second=self.throughput.tokens_per_second,
        )

    def _report(self) -> None:
        state = self._state()
        self.metrics.observe_queue(self.name, state.requests, state.pairs, state.tokens, state.oldest_seconds,
                                   state.seconds_of_work, state.tokens_per_second)


def _resolve(job: Job, finished: float) -> None:
    try:
        check_finite(job.logits)
    except RerankdError as exc:
        _settle(job.future, exc=exc)
        return
    started = job.started if job.started is not None else finished
    _settle(job.future, BatchedScores(job.logits, started - job.enqueued, finished - started))


def _settle(future: Future, result: BatchedScores | None = None, exc: BaseException | None = None) -> None:
    """Set the outcome unless the waiter has already cancelled."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
