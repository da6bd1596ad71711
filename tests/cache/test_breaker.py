"""The circuit breaker in front of Redis, on a clock the test moves."""

from __future__ import annotations

from rerankd.cache import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(threshold: int = 3, max_backoff: float = 30.0) -> tuple[CircuitBreaker, Clock, list[bool]]:
    clock, changes = Clock(), []
    return CircuitBreaker(threshold, max_backoff, changes.append, clock), clock, changes


def test_it_opens_after_failures_in_a_row_only():
    b, _, changes = breaker(threshold=3)
    for ok in (False, False, True, False, False):
        b.record(ok)
    assert not b.is_open and changes == []
    b.record(False)
    assert b.is_open and changes == [True]
    assert b.describe()["state"] == "open"


def test_a_probe_is_due_after_a_backoff_that_doubles_up_to_the_most_and_success_closes_it():
    b, clock, changes = breaker(threshold=1, max_backoff=5.0)
    b.record(False)
    assert b.probe_in() == 1.0
    waits = []
    for _ in range(4):
        clock.now += b.probe_in()
        assert b.probe_in() == 0
        b.probed(False)
        waits.append(b.probe_in())
    assert waits == [2.0, 4.0, 5.0, 5.0] and b.is_open
    b.probed(True)
    assert not b.is_open and changes == [True, False]
    b.record(False)  # opens again, and the backoff starts over
    assert b.probe_in() == 1.0


def test_late_outcomes_of_calls_made_before_it_opened_dont_close_it():
    b, _, _ = breaker(threshold=1)
    b.record(False)
    b.record(True)
    assert b.is_open


def test_a_backoff_limit_under_a_second_is_the_first_wait_too():
    b, _, _ = breaker(threshold=1, max_backoff=0.25)
    b.record(False)
    assert b.probe_in() == 0.25
