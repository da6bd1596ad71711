"""Where cached scores live: an LRU dict in the process, and optionally Redis shared by replicas.

The value is the raw logit with the pair's token count and its length before
truncation, so normalized and raw requests share entries and a hit reports
usage and truncation truthfully. A Redis failure never fails a request: the
lookup counts as a miss, a warning is logged (at most every 30 s) and counted,
and the next request tries again, so service recovers by itself.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import OrderedDict
from typing import NamedTuple, Protocol

from rerankd.telemetry import CacheMetrics

log = logging.getLogger(__name__)

_VALUE = struct.Struct("<fII")
WARN_EVERY_SECONDS = 30.0


class CachedScore(NamedTuple):
    logit: float
    num_tokens: int
    full_length: int

    @property
    def truncated(self) -> bool:
        return self.full_length > self.num_tokens

    def pack(self) -> bytes:
        return _VALUE.pack(self.logit, self.num_tokens, self.full_length)

    @classmethod
    def unpack(cls, data: bytes) -> CachedScore:
        return cls(*_VALUE.unpack(data))


class ScoreCache(Protocol):
    description: dict[str, object]

    async def get_many(self, keys: list[bytes]) -> list[CachedScore | None]: ...

    async def set_many(self, items: list[tuple[bytes, CachedScore]]) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """A bounded LRU; used from the event loop only, so it needs no lock."""

    def __init__(self, max_entries: int, metrics: CacheMetrics) -> None:
        self.max_entries = max_entries
        self.metrics = metrics
        self._entries: OrderedDict[bytes, CachedScore] = OrderedDict()
        self.description = {"kind": "memory", "max_entries": max_entries}

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: list[bytes]) -> list[CachedScore | None]:
        found: list[CachedScore | None] = []
        for key in keys:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            found.append(value)
        hits = sum(v is not None for v in found)
        self.metrics.cache_lookup("memory", hits, len(keys) - hits)
        return found

    async def set_many(self, items: list[tuple[bytes, CachedScore]]) -> None:
        for key, value in items:
            self._entries[key] = value
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisCache:
    """Redis through redis-py's asyncio client: one pipelined MGET per request, SETs with a TTL."""

    def __init__(self, url: str, ttl_seconds: int, timeout_seconds: float, metrics: CacheMetrics) -> None:
        import redis.asyncio as redis

        self.ttl_seconds = ttl_seconds
        self.timeout_seconds = timeout_seconds
        self.metrics = metrics
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, health_check_interval=0
        )
        self._last_warning = 0.0
        self.description = {"kind": "redis", "url": _redact(url), "ttl_seconds": ttl_seconds,
                            "timeout_seconds": timeout_seconds}

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.cache_error("redis", operation)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("redis cache %s failed, scoring without it: %s: %s", operation, type(exc).__name__, exc)

    async def get_many(self, keys: list[bytes]) -> list[CachedScore | None]:
        if not keys:
            return []
        try:
            raw = await asyncio.wait_for(self._client.mget(keys), self.timeout_seconds)
        except Exception as exc:  # any failure is a miss, never a failed request
            self._failed("get", exc)
            return [None] * len(keys)
        found = [CachedScore.unpack(v) if v is not None and len(v) == _VALUE.size else None for v in raw]
        hits = sum(v is not None for v in found)
        self.metrics.cache_lookup("redis", hits, len(keys) - hits)
        return found

    async def set_many(self, items: list[tuple[bytes, CachedScore]]) -> None:
        if not items:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(key, value.pack(), ex=self.ttl_seconds)
                await asyncio.wait_for(pipe.execute(), self.timeout_seconds)
        except Exception as exc:
            self._failed("set", exc)

    async def close(self) -> None:
        await self._client.aclose()


class LayeredCache:
    """The local LRU in front of Redis: Redis is asked only for what the process doesn't hold."""

    def __init__(self, local: MemoryCache, shared: RedisCache) -> None:
        self.local = local
        self.shared = shared
        self.description = {"kind": "memory+redis", "memory": local.description, "redis": shared.description}

    async def get_many(self, keys: list[bytes]) -> list[CachedScore | None]:
        found = await self.local.get_many(keys)
        missing = [i for i, v in enumerate(found) if v is None]
        if missing:
            remote = await self.shared.get_many([keys[i] for i in missing])
            backfill = []
            for i, value in zip(missing, remote, strict=True):
                if value is not None:
                    found[i] = value
                    backfill.append((keys[i], value))
            await self.local.set_many(backfill)
        return found

    async def set_many(self, items: list[tuple[bytes, CachedScore]]) -> None:
        await self.local.set_many(items)
        await self.shared.set_many(items)

    async def close(self) -> None:
        await self.local.close()
        await self.shared.close()


def build_cache(
    enabled: bool, size: int, url: str | None, ttl_seconds: int, timeout_seconds: float, metrics: CacheMetrics
) -> ScoreCache | None:
    if not enabled:
        return None
    local = MemoryCache(size, metrics)
    if not url:
        return local
    return LayeredCache(local, RedisCache(url, ttl_seconds, timeout_seconds, metrics))


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
