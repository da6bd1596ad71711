"""A circuit breaker for the shared cache: after failures in a row, skip it and probe now and then.

Closed, every operation goes to Redis. After `threshold` failures in a row (Redis unreachable, or
slower than --cache-timeout) it opens: requests skip Redis, so a Redis that is down or slow costs
them nothing. While open, the cache's background writer probes once the backoff has passed: success
closes the breaker, failure keeps it open for twice as long, up to `max_backoff` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

FIRST_BACKOFF_SECONDS = 1.0


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        max_backoff: float,
        on_change: Callable[[bool], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_change(is_open)` is called on every transition, to keep a gauge true."""
        self.threshold = threshold
        self.max_backoff = max_backoff
        self._on_change = on_change
        self._clock = clock
        self.failures = 0  # in a row, while closed
        self.is_open = False
        self._backoff = min(FIRST_BACKOFF_SECONDS, max_backoff)
        self._probe_at = 0.0

    def record(self, ok: bool) -> None:
        """The outcome of an ordinary operation. Ones that finish after the breaker opened don't count:
        only a probe closes it, so a Redis that answers some calls in time and not others stays skipped."""
        if self.is_open:
            return
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self._open()

    def probe_in(self) -> float:
        """Seconds until a probe is due (0: now). Meaningful while open."""
        return max(0.0, self._probe_at - self._clock())

    def probed(self, ok: bool) -> None:
        """The outcome of a probe made while open."""
        if ok:
            self.is_open = False
            self.failures = 0
            self._backoff = min(FIRST_BACKOFF_SECONDS, self.max_backoff)
            self._on_change(False)
        else:
            self._backoff = min(self._backoff * 2, self.max_backoff)
            self._probe_at = self._clock() + self._backoff

    def _open(self) -> None:
        self.is_open = True
        self._probe_at = self._clock() + self._backoff
        self._on_change(True)

    def describe(self) -> dict[str, object]:
        if self.is_open:
            return {"state": "open", "next_probe_in_seconds": round(self.probe_in(), 3)}
        return {"state": "closed", "failures_in_a_row": self.failures}
