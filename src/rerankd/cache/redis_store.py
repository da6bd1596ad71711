"""Redis behind the in-process LRU, shared by replicas, and kept from adding its faults to requests.

- Reads: one MGET per request, bounded by --cache-timeout (waiting for a pooled
  connection included), and skipped while the circuit breaker is open.
- Writes: queued and sent by one background task in pipelined batches, so a
  request never waits on them. The queue holds at most --cache-write-queue pairs;
  past that, writes are dropped and counted. A batch that could not reach Redis
  goes back to the queue, so a short outage loses no writes.
- A pooled connection that died (Redis restarted) is retried once on a fresh one,
  so the first call after a restart doesn't miss. The pool is bounded
  (--cache-max-connections).
- Keys carry NAMESPACE; a value read back that is malformed or not finite is a
  miss, and counted.

A Redis failure never fails a request: it is a miss, counted, with a warning at
most every 30 s; the breaker's probes notice when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from urllib.parse import parse_qsl, urlencode, urlsplit

from rerankd.cache.breaker import CircuitBreaker
from rerankd.cache.store import CachedScore
from rerankd.telemetry import CacheMetrics

log = logging.getLogger(__name__)

# Versioned with the key encoding (keys.KEY_VERSION) and the value layout (CachedScore.pack): a change to
# either takes a new prefix, so old and new servers sharing one Redis never read each other's entries. It
# also sets rerankd's keys apart in a Redis shared with other applications (SCAN MATCH rerankd:*).
NAMESPACE = b"rerankd:v1:"
WRITE_BATCH = 512  # pairs per pipeline
CLOSE_FLUSH_SECONDS = 2.0  # what shutting down waits for queued writes, when Redis is answering
WARN_EVERY_SECONDS = 30.0


class RedisCache:
    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: int,
        timeout_seconds: float,
        max_connections: int,
        write_queue: int,
        breaker_threshold: int,
        breaker_max_backoff: float,
        metrics: CacheMetrics,
    ) -> None:
        import redis.asyncio as redis  # an optional extra
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        self.url = url
        self.ttl_seconds = ttl_seconds
        self.timeout_seconds = timeout_seconds
        self.max_connections = max_connections
        self.write_queue = write_queue
        self.metrics = metrics
        # One retry, at once, on a connection error only: a timeout retried would double the wait. Both
        # arguments, because redis-py 5 ignores `retry` without `retry_on_error`.
        self._pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_seconds, socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds, health_check_interval=0,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            retry_on_error=[RedisConnectionError],
        )
        self._client = redis.Redis(connection_pool=self._pool)
        # What the breaker counts: Redis down, or slower than the timeout. An error Redis answered with
        # (out of memory, a read-only replica) says it is there; it fails that call only.
        self._unreachable = (RedisConnectionError, RedisTimeoutError, asyncio.TimeoutError, OSError)
        self.breaker = CircuitBreaker(breaker_threshold, breaker_max_backoff, self._breaker_changed)
        metrics.cache_breaker("redis", False)
        self._pending: deque[tuple[bytes, CachedScore]] = deque()
        self._sending = 0  # pairs the writer has taken and not yet finished
        self._queued = 0  # pairs ever accepted into the queue ...
        self._finished = 0  # ... and ever sent or dropped: flush() waits for the second to catch up
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    @property
    def description(self) -> dict[str, object]:
        return {
            "kind": "redis", "url": _redact(self.url), "namespace": NAMESPACE.decode(),
            "ttl_seconds": self.ttl_seconds, "timeout_seconds": self.timeout_seconds,
            "max_connections": self.max_connections,
            "write_queue": {"pending": len(self._pending) + self._sending, "max": self.write_queue},
            "breaker": self.breaker.describe(),
        }

    async def get_many(self, keys: list[bytes]) -> list[CachedScore | None]:
        self._start_writer()  # it also probes Redis while the breaker is open
        if not keys or self.breaker.is_open:
            return [None] * len(keys)
        try:
            raw = await asyncio.wait_for(self._client.mget([NAMESPACE + k for k in keys]), self.timeout_seconds)
        except Exception as exc:  # any failure is a miss, never a failed request
            self._failed("get", exc)
            self.breaker.record(not isinstance(exc, self._unreachable))
            return [None] * len(keys)
        self.breaker.record(True)
        found = [None if v is None else CachedScore.unpack(v) for v in raw]
        invalid = sum(f is None and v is not None for f, v in zip(found, raw, strict=True))
        if invalid:
            self.metrics.cache_invalid("redis", invalid)
        hits = sum(v is not None for v in found)
        self.metrics.cache_lookup("redis", hits, len(keys) - hits)
        return found

    async def set_many(self, items: list[tuple[bytes, CachedScore]]) -> None:
        """Queue the items for the writer; what doesn't fit is dropped (a cache may forget)."""
        self._start_writer()
        room = max(0, self.write_queue - len(self._pending))
        if len(items) > room:
            self.metrics.cache_dropped("redis", len(items) - room, "queue_full")
            items = items[:room]
        if items:
            self._pending.extend(items)
            self._queued += len(items)
            self._wake.set()

    async def flush(self) -> None:
        """Wait until every pair queued before this call was sent or dropped. While Redis is down that
        is when it comes back; bound the wait (asyncio.wait_for) where that matters."""
        target = self._queued
        async with self._progress:
            await self._progress.wait_for(lambda: self._finished >= target)

    async def close(self) -> None:
        if self._writer is not None:
            if not self.breaker.is_open:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.flush(), CLOSE_FLUSH_SECONDS)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            lost = len(self._pending) + self._sending
            if lost:
                self.metrics.cache_dropped("redis", lost, "shutdown")
        await self._client.aclose()
        await self._pool.disconnect()

    # -- the writer: one task per cache, started from the event loop on first use ---------------------------

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_forever(), name="rerankd-redis-writer")

    async def _write_forever(self) -> None:
        while True:
            probing = self.breaker.is_open
            if probing:
                await asyncio.sleep(self.breaker.probe_in())
            elif not self._pending:
                self._wake.clear()
                await self._wake.wait()  # set by set_many, and when the breaker opens
                continue
            batch = [self._pending.popleft() for _ in range(min(WRITE_BATCH, len(self._pending)))]
            reachable = await (self._send(batch) if batch else self._ping())
            if probing:
                self.breaker.probed(reachable)
            else:
                self.breaker.record(reachable)

    async def _send(self, batch: list[tuple[bytes, CachedScore]]) -> bool:
        """Write one batch; False when Redis could not be reached in time."""
        self._sending = len(batch)  # until it is sent, back in the queue or dropped; lost if cancelled
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in batch:
                    pipe.set(NAMESPACE + key, value.pack(), ex=self.ttl_seconds)
                await asyncio.wait_for(pipe.execute(), self.timeout_seconds)
        except Exception as exc:
            self._sending = 0
            self._failed("set", exc)
            if not isinstance(exc, self._unreachable):
                await self._finish(len(batch), "error")  # Redis refused them: sending them again won't help
                return True
            # Back to the front of the queue, for when Redis answers again (SET is idempotent).
            kept = batch[: max(0, self.write_queue - len(self._pending))]
            self._pending.extendleft(reversed(kept))
            await self._finish(len(batch) - len(kept), "queue_full")
            return False
        self._sending = 0
        await self._finish(len(batch))
        return True

    async def _finish(self, pairs: int, dropped: str | None = None) -> None:
        """Count pairs as done with, sent or (for the reason `dropped`) not, and wake flush()."""
        if dropped is not None and pairs:
            self.metrics.cache_dropped("redis", pairs, dropped)
        async with self._progress:
            self._finished += pairs
            self._progress.notify_all()

    async def _ping(self) -> bool:
        try:
            await asyncio.wait_for(self._client.ping(), self.timeout_seconds)
        except Exception as exc:
            self._failed("probe", exc)
            return False
        return True

    def _breaker_changed(self, is_open: bool) -> None:
        self.metrics.cache_breaker("redis", is_open)
        if is_open:
            log.warning("redis cache: %d failures in a row, skipping it until a probe succeeds",
                        self.breaker.threshold)
            self._wake.set()  # the writer probes, even with nothing to write
        else:
            log.warning("redis cache: a probe succeeded, using it again")

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.cache_error("redis", operation)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("redis cache %s failed, scoring without it: %s: %s", operation, type(exc).__name__, exc)


def _redact(url: str) -> str:
    """`url` as /info shows it: no user:password@, and no password in the query, where redis-py reads one too."""
    parts = urlsplit(url)
    netloc = "***@" + parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    query = [(k, "***" if "password" in k.lower() else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{shown}?{urlencode(query, safe='*')}" if query else shown
