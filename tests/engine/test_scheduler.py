"""The scheduler driven directly: fair sharing, the look-ahead window, cancellation, failures, deadlines, stop.

No HTTP and no timing guesses: `FairQueue` is stepped batch by batch, and the threaded
`Scheduler` runs on a fake backend that the test holds at a gate while it looks.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

from rerankd.engine import BatchScorer, EncodedPair
from rerankd.engine.scheduler import FairQueue, Job, Scheduler, ThroughputMeter
from rerankd.errors import ErrorKind, RerankdError

WAIT = 30  # seconds: a generous deadline on events, never a measurement


def pairs_of(*lengths: int, mark: int = 1) -> list[EncodedPair]:
    """Pairs of the given token lengths; `mark` is written into the ids so the fake backend can tell them apart."""
    return [EncodedPair([mark] * n, None) for n in lengths]


def job(seq: int, *lengths: int) -> Job:
    return Job(seq, pairs_of(*lengths), 0.0, None)


def served(batch, who: Job) -> int:  # type: ignore[no-untyped-def]
    return sum(e.tokens for e in batch if e.job is who)


# --- FairQueue ------------------------------------------------------------------------------------


def test_a_small_request_behind_a_big_one_is_served_in_the_next_batch() -> None:
    queue = FairQueue(max_batch_tokens=2048, max_batch_size=128)
    rng = random.Random(0)
    big = job(0, *(rng.randint(30, 512) for _ in range(300)))
    queue.add(big)
    queue.next_batch()  # the big request is in the model
    small = job(1, 480, 300, 150, 60)
    queue.add(small)
    batch = queue.next_batch()
    assert sorted(e.tokens for e in batch if e.job is small) == [60, 150, 300, 480]
    assert small.pending == []


def test_requests_of_one_size_class_are_served_in_the_order_they_came() -> None:
    queue = FairQueue(max_batch_tokens=2048, max_batch_size=128, window_batches=1)
    rng = random.Random(1)
    first, second = (job(seq, *(rng.randint(200, 400) for _ in range(32))) for seq in (0, 1))
    queue.add(first)
    queue.add(second)
    finished = []
    while queue.pending_pairs:
        queue.next_batch()
        finished += [j.seq for j in (first, second) if not j.pending and j.seq not in finished]
    assert finished == [0, 1]


def test_size_classes_share_the_model_fairly() -> None:
    queue = FairQueue(max_batch_tokens=2048, max_batch_size=128)
    rng = random.Random(5)
    huge = job(0, *(rng.randint(30, 512) for _ in range(300)))  # about 80k tokens
    medium = job(1, *(rng.randint(30, 512) for _ in range(32)))  # about 9k tokens: another class
    queue.add(huge)
    queue.add(medium)
    got = {0: 0, 1: 0}
    while medium.pending:
        for entry in queue.next_batch():
            got[entry.job.seq] += entry.tokens
    # The medium request had about half the model while both waited, not a turn after the huge one.
    assert got[0] <= got[1] + 2 * 2048


def test_pairs_of_a_request_go_longest_first() -> None:
    queue = FairQueue(max_batch_tokens=1000, max_batch_size=128)
    only = job(0, 10, 300, 20, 250, 40)
    queue.add(only)
    order = [e.tokens for _ in range(5) for e in queue.next_batch()]
    assert order == sorted(order, reverse=True)


def test_batches_stay_within_the_budget_and_the_size_limit() -> None:
    queue = FairQueue(max_batch_tokens=1024, max_batch_size=5)
    rng = random.Random(2)
    for seq in range(6):
        queue.add(job(seq, *(rng.randint(1, 400) for _ in range(40))))
    queue.add(job(6, 3000))  # one pair over the budget still gets a batch of its own
    while queue.pending_pairs:
        batch = queue.next_batch()
        width = max(e.tokens for e in batch)
        assert len(batch) <= 5
        assert len(batch) * width <= 1024 or len(batch) == 1


def test_batches_never_reach_past_the_look_ahead_window() -> None:
    queue = FairQueue(max_batch_tokens=512, max_batch_size=64, window_batches=2)
    rng = random.Random(3)
    for seq in range(10):
        queue.add(job(seq, *(rng.randint(5, 200) for _ in range(rng.choice([3, 30, 300])))))
    while queue.pending_pairs:
        ahead = sorted((e for j in queue.jobs for e in j.pending), key=lambda e: e.order())
        window, tokens = set(), 0
        for entry in ahead:
            window.add(id(entry))
            tokens += entry.tokens
            if tokens >= queue.window_tokens:
                break
        before = {j.seq: [id(e) for e in j.pending] for j in queue.jobs}
        batch = queue.next_batch()
        taken = {id(e) for e in batch}
        # Every pair is in the window, except that a small request goes whole once its first pair is.
        for entry in batch:
            if id(entry) not in window:
                pending = before[entry.job.seq]
                assert len(pending) == len(entry.job.pairs) and set(pending) <= taken and pending[0] in window


def test_mixed_lengths_are_batched_with_little_padding() -> None:
    queue = FairQueue(max_batch_tokens=2048, max_batch_size=128)
    rng = random.Random(4)
    for seq in range(8):
        queue.add(job(seq, *(rng.choice([rng.randint(25, 75), rng.randint(100, 250), rng.randint(300, 512)])
                             for _ in range(32))))
    real = padded = 0
    while queue.pending_pairs:
        batch = queue.next_batch()
        real += sum(e.tokens for e in batch)
        padded += len(batch) * max(e.tokens for e in batch)
    assert padded / real < 1.15


def test_removing_a_request_gives_its_pairs_back_at_once() -> None:
    queue = FairQueue(max_batch_tokens=1024, max_batch_size=128)
    keep, drop = job(0, 100, 100), job(1, 50, 60, 70)
    queue.add(keep)
    queue.add(drop)
    assert (queue.pending_pairs, queue.pending_tokens) == (5, 380)
    queue.remove(drop)
    assert (queue.pending_pairs, queue.pending_tokens) == (2, 200)
    assert all(e.job is keep for e in queue.next_batch())


def test_throughput_meter_follows_recent_batches() -> None:
    meter = ThroughputMeter(1000.0)
    for _ in range(1000):
        meter.observe(2000, 1.0)  # 2000 tokens/s for 1000 s of model time
    assert meter.tokens_per_second == pytest.approx(2000, rel=1e-3)
    meter.observe(500, 0.0)  # no time, no information
    assert meter.tokens_per_second == pytest.approx(2000, rel=1e-3)


# --- Scheduler on a fake backend ------------------------------------------------------------------


class GatedBackend:
    """Logit of a row = its first id x 1000 + its length; waits at the gate before each batch it is told to."""

    name = "fake"
    device = "cpu"
    dtype = "fp32"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # the marks of each batch's rows
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()
        self.gate.set()
        self.poison: int | None = None

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        self.entered.release()
        assert self.gate.wait(WAIT), "the test never opened the gate"
        marks = ids[:, 0].tolist()
        self.batches.append(marks)
        if self.poison in marks:
            raise RuntimeError("a bad batch")
        return (ids[:, 0] * 1000 + mask.sum(axis=1)).astype(np.float32)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return False

    def release_memory(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def backend() -> GatedBackend:
    return GatedBackend()


def make_scheduler(backend: GatedBackend, budget: int = 64, clock=None) -> Scheduler:  # type: ignore[no-untyped-def]
    scorer = BatchScorer(backend, pad_id=0, with_token_types=False, max_batch_tokens=budget, max_batch_size=16)
    scheduler = Scheduler(scorer, "test", clock=clock) if clock else Scheduler(scorer, "test")
    scheduler.start(tokens_per_second=1000.0)
    return scheduler


def hold_first_batch(backend: GatedBackend, scheduler: Scheduler, mark: int = 9) -> Job:
    """Put a one-pair request in the model and keep it there until the test opens the gate."""
    backend.gate.clear()
    running = scheduler.submit(pairs_of(8, mark=mark))
    assert backend.entered.acquire(timeout=WAIT)
    return running


def test_logits_come_back_in_input_order(backend: GatedBackend) -> None:
    scheduler = make_scheduler(backend)
    lengths = [5, 30, 1, 17, 9]
    result = scheduler.submit(pairs_of(*lengths, mark=3)).future.result(WAIT)
    assert result.logits.tolist() == [3000 + n for n in lengths]
    scheduler.stop(WAIT)


def test_cancelling_drops_queued_pairs_at_once(backend: GatedBackend) -> None:
    scheduler = make_scheduler(backend)
    running = hold_first_batch(backend, scheduler)
    gone = scheduler.submit(pairs_of(8, 8, 8, mark=5))
    assert scheduler.state().pairs == 4
    scheduler.cancel(gone)
    assert scheduler.state().pairs == 1  # before any batch ends
    with pytest.raises(CancelledError):
        gone.future.result(0)
    backend.gate.set()
    running.future.result(WAIT)
    after = scheduler.submit(pairs_of(4, mark=6)).future.result(WAIT)
    assert after.logits.tolist() == [6004]
    assert not any(5 in marks for marks in backend.batches), "a cancelled request's pairs ran"
    scheduler.stop(WAIT)


def test_a_failing_batch_fails_only_the_requests_in_it(backend: GatedBackend) -> None:
    scheduler = make_scheduler(backend, budget=8)  # one 8-token pair per batch
    running = hold_first_batch(backend, scheduler)
    backend.poison = 7
    bad = scheduler.submit(pairs_of(8, 8, mark=7))
    good = scheduler.submit(pairs_of(8, 8, mark=4))
    backend.gate.set()
    assert good.future.result(WAIT).logits.tolist() == [4008, 4008]
    with pytest.raises(RuntimeError, match="a bad batch"):
        bad.future.result(WAIT)
    running.future.result(WAIT)
    assert scheduler.state().pairs == 0
    assert scheduler.health(stall_timeout=60) is None
    scheduler.stop(WAIT)


def test_a_request_past_its_deadline_expires_before_it_runs(backend: GatedBackend) -> None:
    clock = FakeClock()
    scheduler = make_scheduler(backend, clock=clock)
    running = hold_first_batch(backend, scheduler)
    late = scheduler.submit(pairs_of(8, mark=2), deadline=clock.now + 5)
    clock.now += 6
    backend.gate.set()
    with pytest.raises(RerankdError) as error:
        late.future.result(WAIT)
    assert error.value.kind is ErrorKind.TIMEOUT and "--request-timeout" in error.value.message
    running.future.result(WAIT)
    assert not any(2 in marks for marks in backend.batches)
    scheduler.stop(WAIT)


def test_stop_fails_queued_requests_and_refuses_new_ones(backend: GatedBackend) -> None:
    scheduler = make_scheduler(backend)
    running = hold_first_batch(backend, scheduler)
    queued = scheduler.submit(pairs_of(8, mark=2))
    stopper = threading.Thread(target=scheduler.stop, args=(WAIT,))
    stopper.start()
    for waiting in (running, queued):
        with pytest.raises(RerankdError, match="shut down"):
            waiting.future.result(WAIT)
    with pytest.raises(RerankdError, match="shutting down"):
        scheduler.submit(pairs_of(8))
    backend.gate.set()  # the running batch ends; its answer is dropped, and the thread exits
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert backend.batches == [[9]]


def test_fail_all_answers_every_request_in_flight(backend: GatedBackend) -> None:
    scheduler = make_scheduler(backend)
    running = hold_first_batch(backend, scheduler)
    queued = scheduler.submit(pairs_of(8, mark=2))
    scheduler.fail_all(RerankdError(ErrorKind.TIMEOUT, "drain deadline"))
    for waiting in (running, queued):
        with pytest.raises(RerankdError, match="drain deadline"):
            waiting.future.result(WAIT)
    assert scheduler.state().requests == 0
    backend.gate.set()
    assert scheduler.submit(pairs_of(3, mark=1)).future.result(WAIT).logits.tolist() == [1003]
    scheduler.stop(WAIT)


def test_health_reports_a_stalled_model(backend: GatedBackend) -> None:
    clock = FakeClock()
    scheduler = make_scheduler(backend, clock=clock)
    assert scheduler.health(stall_timeout=60) is None
    running = hold_first_batch(backend, scheduler)
    clock.now += 61
    problem = scheduler.health(stall_timeout=60)
    assert problem is not None and "--stall-timeout" in problem
    backend.gate.set()
    running.future.result(WAIT)
    assert scheduler.health(stall_timeout=60) is None
    scheduler.stop(WAIT)


def test_health_reports_a_dead_model_thread_and_its_requests_get_an_answer(backend: GatedBackend) -> None:
    scheduler = make_scheduler(backend)
    running = hold_first_batch(backend, scheduler)
    queued = scheduler.submit(pairs_of(8, mark=2))

    def broken() -> list:
        raise RuntimeError("a bug in the scheduler")

    scheduler._queue.next_batch = broken  # type: ignore[method-assign]
    backend.gate.set()
    running.future.result(WAIT)
    with pytest.raises(RerankdError, match="model thread"):
        queued.future.result(WAIT)
    scheduler._thread.join(WAIT)
    assert scheduler.health(stall_timeout=60) == "the model thread has died"
    with pytest.raises(RerankdError, match="model thread"):
        scheduler.submit(pairs_of(8))


def test_throughput_meter_follows_a_slowdown_quickly_and_a_speedup_slowly() -> None:
    meter = ThroughputMeter(1000.0)
    for _ in range(30):
        meter.observe(500, 1.0)  # the machine halves its speed for 30 s
    assert meter.tokens_per_second < 600  # the short average saw it
    for _ in range(30):
        meter.observe(1000, 1.0)  # back to full speed for 30 s
    assert meter.tokens_per_second < 900  # the long average still remembers the slow minute
