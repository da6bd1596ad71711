"""What the engine and the cache report, as small interfaces the layer above implements.

The scheduler and the score cache sit below the HTTP server, so they can't
import its Prometheus metrics; they call these methods instead. The server's
`Metrics` implements both protocols; the library and the unit tests use
`NO_METRICS`, which drops everything.
"""

from __future__ import annotations

from typing import Protocol

# Why the door refused a request: too many in flight, too long a wait ahead, the queue's pair limit,
# or a request that can never fit (413) whatever the load.
REFUSAL_REASONS = ("in_flight", "queue_wait", "queue_pairs", "too_large")


class EngineMetrics(Protocol):
    """What one served model's admission, tokenization and scheduler measure."""

    def observe_tokenize(self, model: str, seconds: float) -> None: ...

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        """Time a request waited before its first pair ran."""
        ...

    def observe_batch(self, model: str, rows: int, padded_tokens: int, seconds: float) -> None: ...

    def observe_queue(
        self, model: str, requests: int, pairs: int, tokens: int, oldest_seconds: float,
        estimated_wait_seconds: float, tokens_per_second: float,
    ) -> None:
        """The queue's state now: requests, pairs and tokens waiting or running, the oldest request's age,
        the work queued in seconds, and the measured throughput."""
        ...

    def refused(self, model: str, reason: str) -> None:
        """One request refused at the door, for one of REFUSAL_REASONS."""
        ...

    def truncated(self, model: str, documents: int) -> None: ...


class CacheMetrics(Protocol):
    def cache_lookup(self, layer: str, hits: int, misses: int) -> None: ...

    def cache_error(self, layer: str, operation: str) -> None: ...

    def cache_invalid(self, layer: str, values: int) -> None:
        """Values read back that were malformed or not finite, taken as misses."""
        ...

    def cache_dropped(self, layer: str, pairs: int, reason: str) -> None:
        """Writes given up: `queue_full` (the write queue had no room), `error` (the store failed them) or
        `shutdown` (still queued when the server stopped)."""
        ...

    def cache_breaker(self, layer: str, is_open: bool) -> None:
        """The circuit breaker in front of a layer opened (the layer is skipped) or closed."""
        ...


class _NoMetrics:
    """Both protocols, recording nothing."""

    def observe_tokenize(self, model: str, seconds: float) -> None:
        pass

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        pass

    def observe_batch(self, model: str, rows: int, padded_tokens: int, seconds: float) -> None:
        pass

    def observe_queue(
        self, model: str, requests: int, pairs: int, tokens: int, oldest_seconds: float,
        estimated_wait_seconds: float, tokens_per_second: float,
    ) -> None:
        pass

    def refused(self, model: str, reason: str) -> None:
        pass

    def truncated(self, model: str, documents: int) -> None:
        pass

    def cache_lookup(self, layer: str, hits: int, misses: int) -> None:
        pass

    def cache_error(self, layer: str, operation: str) -> None:
        pass

    def cache_invalid(self, layer: str, values: int) -> None:
        pass

    def cache_dropped(self, layer: str, pairs: int, reason: str) -> None:
        pass

    def cache_breaker(self, layer: str, is_open: bool) -> None:
        pass


NO_METRICS = _NoMetrics()
