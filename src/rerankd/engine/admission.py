"""Admission at the door: a request is refused before any work is spent on it when it can't be served in time.

Three limits, checked before tokenization on an estimate of the request's
tokens (from its characters), then again on the exact count once it is
tokenized:

- requests in flight (`--max-concurrent-requests`): 429 at once;
- the wait ahead: the work served before the request would finish, divided by
  the measured throughput, must stay within `--max-queue-wait`; past it, 429
  with a Retry-After of how long the excess takes to drain. The scheduler shares
  the model fairly between size classes and in order within one, so the work
  ahead of a request is its class's backlog plus, from every other class, as
  much again at most (`Scheduler.work_ahead`), and its own tokens up to one
  look-ahead window; requests admitted but not yet queued count too. A small
  request is not refused for the big one it will overtake, nor any request
  with nothing ahead of it;
- the queue's pair limit (`--max-queued-pairs`): 429.

A request that can never fit, whatever the load, gets 413 instead: more pairs
than the queue holds, or more model time on an idle server than
`--request-timeout`. Everything runs on the event loop's thread.
"""

from __future__ import annotations

import math

from rerankd.engine.scheduler import QueueState, Scheduler
from rerankd.errors import ErrorKind, RerankdError
from rerankd.telemetry import EngineMetrics

# Characters of text after which the tokens-per-character average has mostly forgotten its past.
_ESTIMATE_HORIZON_CHARS = 100_000


class InFlightLimit:
    """Requests admitted and not yet answered, shared by every model of one server."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def try_enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


class TokenEstimator:
    """Tokens per character of the texts tokenized so far, to price a request before tokenizing it."""

    def __init__(self, tokens_per_char: float) -> None:
        self.tokens_per_char = tokens_per_char

    def observe(self, chars: int, tokens: int) -> None:
        if chars <= 0:
            return
        weight = 1.0 - math.exp(-chars / _ESTIMATE_HORIZON_CHARS)
        self.tokens_per_char += weight * (tokens / chars - self.tokens_per_char)

    def tokens(self, chars: int) -> int:
        return math.ceil(chars * self.tokens_per_char)


class Permit:
    """One admitted request: its slot in flight and the tokens it holds in the wait estimate until queued."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.pairs = 0  # reserved in the admission's count until queued
        self.tokens = 0
        self._released = False

    def confirm(self, pairs: int, tokens: int) -> None:
        """Check again with the exact pairs and tokens that go to the model (cache hits are not among them)."""
        self._admission.confirm(self, pairs, tokens)

    def queued(self) -> None:
        """The scheduler holds the work now; stop counting it here."""
        self._admission.unreserve(self)

    def release(self) -> None:
        """Answered, failed or abandoned: give the slot back (idempotent)."""
        if not self._released:
            self._released = True
            self._admission.unreserve(self)
            self._admission.in_flight.leave()


class Admission:
    """The door of one served model.

    Args:
        scheduler: The model's scheduler, whose queue and throughput the wait is computed from.
        in_flight: The server's limit on requests in flight.
        max_queue_wait: Most seconds of work that may be ahead of a new request.
        max_queued_pairs: Most pairs queued across requests.
        request_timeout: Seconds a request may take in all; one that needs more on an idle model gets 413.
    """

    def __init__(
        self, scheduler: Scheduler, in_flight: InFlightLimit, *, max_queue_wait: float, max_queued_pairs: int,
        request_timeout: float, metrics: EngineMetrics,
    ) -> None:
        self.scheduler = scheduler
        self.in_flight = in_flight
        self.max_queue_wait = max_queue_wait
        self.max_queued_pairs = max_queued_pairs
        self.request_timeout = request_timeout
        self.metrics = metrics
        self._reserved_pairs = 0
        self._reserved: set[Permit] = set()  # admitted, not yet queued: their tokens are ahead too

    def admit(self, pairs: int, estimated_tokens: int) -> Permit:
        """Let a request of `pairs` pairs and about `estimated_tokens` tokens in, or raise 429/413."""
        self._check_pairs(pairs)
        if not self.in_flight.try_enter():
            state = self.scheduler.state()
            # Under fair sharing one of the requests in flight ends, on average, after this long.
            retry = state.seconds_of_work / max(1, state.requests)
            raise self._refuse("in_flight", (
                f"the server is busy: {self.in_flight.count} requests are in flight, the limit "
                "(--max-concurrent-requests); retry shortly"), retry)
        try:
            self._check_load(self.scheduler.state(), pairs, estimated_tokens, None)
        except RerankdError:
            self.in_flight.leave()
            raise
        permit = Permit(self)
        self._reserve(permit, pairs, estimated_tokens)
        return permit

    def confirm(self, permit: Permit, pairs: int, tokens: int) -> None:
        self._check_pairs(pairs)
        state = self.scheduler.state()
        idle_seconds = tokens / state.tokens_per_second
        if idle_seconds > self.request_timeout:
            fitting = max(1, int(pairs * self.request_timeout / idle_seconds * 0.9))
            raise self._refuse("too_large", (
                f"this request needs about {idle_seconds:.0f} s of model time on an idle server ({tokens} tokens at "
                f"the measured {state.tokens_per_second:.0f} tokens/s), over the request timeout of "
                f"{self.request_timeout:g} s (--request-timeout); split it into requests of at most {fitting} "
                "documents"))
        self._check_load(state, pairs, tokens, permit)
        self._reserve(permit, pairs, tokens)

    def _reserve(self, permit: Permit, pairs: int, tokens: int) -> None:
        self._reserved_pairs += pairs - permit.pairs
        permit.pairs, permit.tokens = pairs, tokens
        self._reserved.add(permit)

    def unreserve(self, permit: Permit) -> None:
        self._reserved_pairs -= permit.pairs
        permit.pairs = permit.tokens = 0
        self._reserved.discard(permit)

    def _check_pairs(self, pairs: int) -> None:
        if pairs > self.max_queued_pairs:
            raise self._refuse("too_large", (
                f"this request makes {pairs} pairs, more than the queue holds ({self.max_queued_pairs}, "
                f"--max-queued-pairs); split it into requests of at most {self.max_queued_pairs} documents"))

    def _check_load(self, state: QueueState, pairs: int, tokens: int, own: Permit | None) -> None:
        """The wait and the pair count ahead of a request of `pairs` pairs and `tokens` tokens."""
        ahead = self.scheduler.work_ahead(tokens, (p.tokens for p in self._reserved if p is not own))
        wait = ahead / state.tokens_per_second
        if wait > self.max_queue_wait:
            raise self._refuse("queue_wait", (
                f"the server is busy: about {wait:.1f} s of work is queued ahead of this request, over the limit "
                f"of {self.max_queue_wait:g} s (--max-queue-wait); retry later"), wait - self.max_queue_wait)
        queued = state.pairs + self._reserved_pairs - (own.pairs if own is not None else 0)
        if queued + pairs > self.max_queued_pairs:
            excess = queued + pairs - self.max_queued_pairs
            raise self._refuse("queue_pairs", (
                f"the server is busy: {queued} pairs are queued and this request adds {pairs}, over the limit of "
                f"{self.max_queued_pairs} (--max-queued-pairs); retry later"),
                state.seconds_of_work * excess / max(1, state.pairs))

    def _refuse(self, reason: str, message: str, retry_after: float | None = None) -> RerankdError:
        self.metrics.refused(self.scheduler.name, reason)
        if reason == "too_large":
            return RerankdError(ErrorKind.INPUT_TOO_LARGE, message)
        return RerankdError(ErrorKind.OVERLOADED, message, retry_after=max(1, math.ceil(retry_after or 0)))
