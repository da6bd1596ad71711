"""The in-process LRU, and Redis for real: hits, TTL expiry, failure as a miss, recovery.

The cache reports through `rerankd.telemetry.CacheMetrics`; the server's Prometheus `Metrics` implements it,
so the Redis tests count through that.
"""

from __future__ import annotations

import asyncio
import time

from rerankd.cache import CachedScore, LayeredCache, MemoryCache, RedisCache
from rerankd.server.metrics import Metrics
from rerankd.telemetry import NO_METRICS


def run(coro):
    return asyncio.run(coro)


def counter(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_values_round_trip_and_report_truncation():
    value = CachedScore(-1.25, 512, 900)
    assert CachedScore.unpack(value.pack()) == value and value.truncated
    assert not CachedScore(0.5, 10, 10).truncated


def test_memory_cache_is_a_bounded_lru():
    cache = MemoryCache(2, NO_METRICS)

    async def scenario():
        await cache.set_many([(b"a", CachedScore(1.0, 3, 3)), (b"b", CachedScore(2.0, 3, 3))])
        assert (await cache.get_many([b"a"]))[0].logit == 1.0  # a is now most recent
        await cache.set_many([(b"c", CachedScore(3.0, 3, 3))])
        return await cache.get_many([b"a", b"b", b"c"])

    a, b, c = run(scenario())
    assert a is not None and b is None and c is not None and len(cache) == 2


class RecordingMetrics:
    """A `CacheMetrics` that keeps what it is told."""

    def __init__(self) -> None:
        self.lookups: list[tuple[str, int, int]] = []
        self.errors: list[tuple[str, str]] = []

    def cache_lookup(self, layer: str, hits: int, misses: int) -> None:
        self.lookups.append((layer, hits, misses))

    def cache_error(self, layer: str, operation: str) -> None:
        self.errors.append((layer, operation))


def test_memory_cache_reports_hits_and_misses_through_the_metrics_protocol():
    metrics = RecordingMetrics()
    cache = MemoryCache(10, metrics)

    async def scenario():
        await cache.set_many([(b"a", CachedScore(1.0, 3, 3))])
        await cache.get_many([b"a", b"b", b"c"])

    run(scenario())
    assert metrics.lookups == [("memory", 1, 2)] and metrics.errors == []


def test_redis_miss_then_hit(redis_server):
    metrics = Metrics()

    async def scenario():
        cache = RedisCache(redis_server.url, ttl_seconds=60, timeout_seconds=1.0, metrics=metrics)
        first = await cache.get_many([b"k1", b"k2"])
        await cache.set_many([(b"k1", CachedScore(0.75, 12, 12))])
        second = await cache.get_many([b"k1", b"k2"])
        await cache.close()
        return first, second

    first, second = run(scenario())
    assert first == [None, None]
    assert second == [CachedScore(0.75, 12, 12), None]
    assert counter(metrics, "rerankd_cache_hits_total", layer="redis") == 1


def test_redis_entries_expire_after_the_ttl(redis_server):
    async def scenario():
        cache = RedisCache(redis_server.url, ttl_seconds=1, timeout_seconds=1.0, metrics=NO_METRICS)
        await cache.set_many([(b"k", CachedScore(1.0, 5, 5))])
        fresh = await cache.get_many([b"k"])
        await asyncio.sleep(1.5)
        expired = await cache.get_many([b"k"])
        await cache.close()
        return fresh, expired

    fresh, expired = run(scenario())
    assert fresh[0] is not None and expired == [None]


def test_redis_down_is_a_counted_miss_and_it_recovers_when_redis_returns(redis_server):
    metrics = Metrics()

    async def scenario():
        cache = LayeredCache(MemoryCache(10, metrics), RedisCache(redis_server.url, 60, 0.5, metrics))
        await cache.set_many([(b"k", CachedScore(1.0, 5, 5))])
        redis_server.stop()
        started = time.monotonic()
        down = await cache.shared.get_many([b"k"])  # straight to Redis: must not raise
        await cache.set_many([(b"other", CachedScore(2.0, 5, 5))])  # must not raise either
        local = await cache.get_many([b"k"])  # the LRU in front still answers
        elapsed = time.monotonic() - started
        redis_server.start()
        await cache.shared.set_many([(b"k2", CachedScore(3.0, 6, 6))])
        back = await cache.shared.get_many([b"k2"])
        await cache.close()
        return down, local, back, elapsed

    down, local, back, elapsed = run(scenario())
    assert down == [None] and local[0] is not None and back[0] == CachedScore(3.0, 6, 6)
    assert elapsed < 3
    assert counter(metrics, "rerankd_cache_errors_total", layer="redis", op="get") >= 1
    assert counter(metrics, "rerankd_cache_errors_total", layer="redis", op="set") >= 1
