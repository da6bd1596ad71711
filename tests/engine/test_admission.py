"""Admission and the service's warm-up, driven directly: no HTTP, no timing guesses.

The scheduler here is never started, so what is submitted stays queued and the
wait ahead is exactly queued tokens / the throughput the test sets.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.cache import CacheKeyer
from rerankd.engine import BatchScorer, EncodedPair
from rerankd.engine.admission import Admission, InFlightLimit, TokenEstimator
from rerankd.engine.scheduler import Scheduler
from rerankd.engine.service import ScoringService
from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import Settings
from rerankd.telemetry import NO_METRICS


class Backend:
    """One logit per row; refuses batches over `fits` tokens the way a GPU runs out of memory."""

    name = "fake"
    device = "cpu"
    dtype = "fp32"

    def __init__(self, fits: int = 10**9) -> None:
        self.fits = fits
        self.shapes: list[tuple[int, int]] = []

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        rows, width = inputs["input_ids"].shape
        self.shapes.append((rows, width))
        if rows * width > self.fits:
            raise MemoryError("out of memory")
        return np.zeros(rows, dtype=np.float32)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)

    def release_memory(self) -> None:
        pass


class Refusals:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(NO_METRICS, name)

    def refused(self, model: str, reason: str) -> None:
        self.reasons.append(reason)


def door(tokens_per_second: float = 100.0, *, in_flight: int = 10, max_queue_wait: float = 10.0,
         max_queued_pairs: int = 100, request_timeout: float = 60.0) -> tuple[Admission, Scheduler, Refusals]:
    scorer = BatchScorer(Backend(), pad_id=0, with_token_types=False, max_batch_tokens=64, max_batch_size=8)
    scheduler = Scheduler(scorer, "m")
    scheduler.throughput.tokens_per_second = tokens_per_second
    metrics = Refusals()
    admission = Admission(scheduler, InFlightLimit(in_flight), max_queue_wait=max_queue_wait,
                          max_queued_pairs=max_queued_pairs, request_timeout=request_timeout, metrics=metrics)
    return admission, scheduler, metrics


def queue(scheduler: Scheduler, tokens: int, pairs: int = 1) -> None:
    scheduler.submit([EncodedPair([1] * (tokens // pairs), None) for _ in range(pairs)])


def test_a_request_behind_too_long_a_wait_is_429_with_the_time_the_excess_takes_to_drain() -> None:
    admission, scheduler, metrics = door(tokens_per_second=100, max_queue_wait=10)
    # The door's look-ahead window is 4 x 64 tokens: a request's own tokens count up to that much.
    queue(scheduler, 744)  # 7.44 s of work ahead, plus 2.56 s of its own: just admitted
    admission.admit(1, 1000).release()
    queue(scheduler, 251)  # 12.51 s
    with pytest.raises(RerankdError) as error:
        admission.admit(1, 1000)
    assert error.value.kind is ErrorKind.OVERLOADED
    assert error.value.retry_after == 3  # 2.51 s over the limit, rounded up
    assert "12.5 s of work is queued ahead" in error.value.message
    assert metrics.reasons == ["queue_wait"]


def test_a_small_request_is_not_refused_for_the_big_one_it_will_overtake() -> None:
    admission, scheduler, metrics = door(tokens_per_second=100, max_queue_wait=10)
    queue(scheduler, 5000, pairs=10)  # 50 s of work in one big request
    # Fair sharing serves the small request after about its own size of the big one's work: 1 s (and 1 s
    # of its own).
    admission.admit(4, 100).release()
    with pytest.raises(RerankdError, match="queued ahead"):
        admission.admit(40, 2000)  # 20 s of the big one's work would go before this one finishes
    assert metrics.reasons == ["queue_wait"]


def test_admitted_but_not_yet_queued_work_counts_in_the_wait() -> None:
    admission, _, metrics = door(tokens_per_second=100, max_queue_wait=10)
    first = admission.admit(4, 1100)  # tokenizing: its 11 s are ahead of an equal request
    with pytest.raises(RerankdError):
        admission.admit(4, 1100)
    first.queued()  # now the scheduler would hold them (here: nowhere), so they no longer count here
    admission.admit(4, 1100).release()
    first.release()
    assert metrics.reasons == ["queue_wait"]


def test_the_exact_count_after_tokenizing_replaces_the_estimate() -> None:
    admission, scheduler, _ = door(tokens_per_second=100, max_queue_wait=10)
    permit = admission.admit(2, 10)
    permit.confirm(2, 1100)  # a bad estimate: the request is bigger than it looked, 11 s of work
    with pytest.raises(RerankdError, match="queued ahead"):
        admission.admit(4, 2000)
    permit.release()
    admission.admit(1, 10).release()
    assert scheduler.state().tokens == 0


def test_the_in_flight_limit_refuses_at_once_and_a_release_gives_the_slot_back() -> None:
    admission, _, metrics = door(in_flight=2)
    a, b = admission.admit(1, 1), admission.admit(1, 1)
    with pytest.raises(RerankdError, match="--max-concurrent-requests") as error:
        admission.admit(1, 1)
    assert error.value.retry_after is not None and error.value.retry_after >= 1
    a.release()
    a.release()  # twice is harmless
    admission.admit(1, 1).release()
    b.release()
    assert admission.in_flight.count == 0
    assert metrics.reasons == ["in_flight"]


def test_a_full_queue_is_429_and_more_pairs_than_it_holds_is_413() -> None:
    admission, scheduler, metrics = door(max_queued_pairs=10, max_queue_wait=1e9)
    queue(scheduler, 80, pairs=8)
    with pytest.raises(RerankdError, match="--max-queued-pairs") as busy:
        admission.admit(3, 3)
    assert busy.value.kind is ErrorKind.OVERLOADED
    with pytest.raises(RerankdError, match="at most 10 documents") as never:
        admission.admit(11, 11)
    assert never.value.kind is ErrorKind.INPUT_TOO_LARGE and never.value.retry_after is None
    assert metrics.reasons == ["queue_pairs", "too_large"]
    assert admission.in_flight.count == 0


def test_more_model_time_than_the_request_timeout_is_413_saying_how_to_split() -> None:
    admission, _, metrics = door(tokens_per_second=100, request_timeout=60)
    permit = admission.admit(100, 100)
    with pytest.raises(RerankdError) as error:
        permit.confirm(100, 12_000)  # 120 s of model time on an idle server
    assert error.value.kind is ErrorKind.INPUT_TOO_LARGE
    assert "--request-timeout" in error.value.message and "at most 45 documents" in error.value.message
    permit.release()
    assert metrics.reasons == ["too_large"]


def test_the_token_estimate_learns_from_what_was_tokenized() -> None:
    estimator = TokenEstimator(0.5)
    for _ in range(100):
        estimator.observe(10_000, 2_500)  # 4 characters per token
    assert estimator.tokens(4000) == pytest.approx(1000, rel=0.01)


# --- the service's warm-up ---------------------------------------------------------------------


def service(reranker: Reranker, backend: Backend, budget: int) -> ScoringService:
    scorer = BatchScorer(backend, pad_id=reranker.encoder.pad_id, with_token_types=False, max_batch_tokens=budget,
                         max_batch_size=128)
    settings = Settings(model="fixture", max_batch_tokens=budget)
    keyer = CacheKeyer("fixture", "fake", "fp32", 512, 384)
    return ScoringService("m", settings, reranker.encoder, scorer, keyer, None, ThreadPoolExecutor(1),
                          InFlightLimit(4), NO_METRICS)


def test_warm_up_runs_one_batch_of_the_full_token_budget(reranker: Reranker) -> None:
    backend = Backend()
    served = service(reranker, backend, budget=2048)
    assert served.warm_up() > 0
    assert set(backend.shapes) == {(4, 512)}  # 4 rows x max_length = the budget
    served.scheduler.stop(5)


def test_warm_up_fails_at_start_when_the_budget_does_not_fit(reranker: Reranker) -> None:
    served = service(reranker, Backend(fits=1024), budget=4096)
    with pytest.raises(RerankdError, match="--max-batch-tokens") as error:
        served.warm_up()
    assert error.value.kind is ErrorKind.MODEL_LOAD


def test_admitted_pairs_count_against_the_pair_limit_until_they_leave() -> None:
    admission, scheduler, _ = door(max_queued_pairs=10, max_queue_wait=1e9)
    first = admission.admit(6, 60)
    with pytest.raises(RerankdError, match="--max-queued-pairs"):
        admission.admit(5, 50)
    first.confirm(6, 60)
    queue(scheduler, 60, pairs=6)  # what the service submits for it
    first.queued()
    with pytest.raises(RerankdError, match="--max-queued-pairs"):
        admission.admit(5, 50)  # the scheduler holds the 6 now
    first.release()
    assert scheduler.state().pairs == 6
    admission.admit(4, 40).release()


def test_an_idle_model_admits_a_request_longer_than_the_wait_limit() -> None:
    admission, scheduler, metrics = door(tokens_per_second=100, max_queue_wait=1)
    first = admission.admit(10, 5000)  # 50 s of model time, nothing ahead: starts at once
    with pytest.raises(RerankdError, match="queued ahead"):
        admission.admit(10, 5000)  # the same again, behind the first one's work
    first.release()
    admission.admit(10, 5000).release()
    assert metrics.reasons == ["queue_wait"]
