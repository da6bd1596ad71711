"""Redis for real (a redis-server on a free loopback port): namespaced keys, checked values, writes in the
background, a bounded pool, one retry on a dead connection, and the circuit breaker.

The cache reports through `rerankd.telemetry.CacheMetrics`; the server's Prometheus `Metrics` implements it,
so these tests count through that. Waits are deadlines on events, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time

import redis
from delay_proxy import DelayProxy

from rerankd.cache import CachedScore, LayeredCache, MemoryCache, RedisCache
from rerankd.cache.redis_store import NAMESPACE
from rerankd.server.metrics import Metrics
from rerankd.settings import Settings

DEFAULTS = Settings()


def redis_cache(url: str, metrics: Metrics, **changes: float) -> RedisCache:
    options = {
        "ttl_seconds": DEFAULTS.cache_ttl, "timeout_seconds": DEFAULTS.cache_timeout,
        "max_connections": DEFAULTS.cache_max_connections, "write_queue": DEFAULTS.cache_write_queue,
        "breaker_threshold": DEFAULTS.cache_breaker_threshold, "breaker_max_backoff": DEFAULTS.cache_breaker_backoff,
    }
    return RedisCache(url, **{**options, **changes}, metrics=metrics)  # type: ignore[arg-type]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_keys_live_under_the_namespace_with_the_ttl_and_read_back(redis_server):
    metrics = Metrics()

    async def scenario():
        cache = redis_cache(redis_server.url, metrics, ttl_seconds=60)
        first = await cache.get_many([b"k1", b"k2"])
        await cache.set_many([(b"k1", CachedScore(0.75, 12, 12))])
        await cache.flush()
        second = await cache.get_many([b"k1", b"k2"])
        await cache.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert first == [None, None] and second == [CachedScore(0.75, 12, 12), None]
    store = redis.Redis.from_url(redis_server.url)
    assert store.keys() == [NAMESPACE + b"k1"] and NAMESPACE == b"rerankd:v1:"
    assert 0 < store.ttl(NAMESPACE + b"k1") <= 60
    assert value(metrics, "rerankd_cache_hits_total", layer="redis") == 1
    assert value(metrics, "rerankd_cache_misses_total", layer="redis") == 3


def test_a_malformed_or_non_finite_value_is_a_counted_miss(redis_server):
    bad = {b"short": b"\x01\x02", b"nan": struct.pack("<fII", math.nan, 3, 3),
           b"inf": struct.pack("<fII", math.inf, 3, 3), b"no-tokens": struct.pack("<fII", 1.0, 0, 0)}
    store = redis.Redis.from_url(redis_server.url)
    for key, data in bad.items():
        store.set(NAMESPACE + key, data)
    store.set(NAMESPACE + b"good", CachedScore(2.0, 4, 5).pack())
    metrics = Metrics()

    async def scenario():
        cache = redis_cache(redis_server.url, metrics)
        found = await cache.get_many([*bad, b"good"])
        await cache.close()
        return found

    assert asyncio.run(scenario()) == [None] * len(bad) + [CachedScore(2.0, 4, 5)]
    assert value(metrics, "rerankd_cache_invalid_values_total", layer="redis") == len(bad)
    assert value(metrics, "rerankd_cache_misses_total", layer="redis") == len(bad)
    assert value(metrics, "rerankd_cache_errors_total", layer="redis", op="get") == 0


def test_writes_past_the_queue_are_dropped_and_counted(redis_server):
    metrics = Metrics()

    async def scenario():
        cache = redis_cache(redis_server.url, metrics, write_queue=3)
        await cache.set_many([(f"k{i}".encode(), CachedScore(float(i), 3, 3)) for i in range(10)])
        await cache.flush()
        await cache.close()

    asyncio.run(scenario())
    assert value(metrics, "rerankd_cache_dropped_writes_total", layer="redis", reason="queue_full") == 7
    assert sorted(redis.Redis.from_url(redis_server.url).keys()) == [NAMESPACE + b"k0", NAMESPACE + b"k1",
                                                                      NAMESPACE + b"k2"]


def test_writes_leave_the_caller_at_once_and_flush_waits_for_them(redis_server):
    proxy = DelayProxy(redis_server.port, delay=0.3)  # every reply from Redis held 0.3 s

    async def scenario():
        cache = redis_cache(proxy.url, Metrics(), timeout_seconds=10.0)
        started = time.monotonic()
        await cache.set_many([(b"k", CachedScore(1.0, 3, 3))])
        queued = time.monotonic() - started
        await cache.flush()
        flushed = time.monotonic() - started
        await cache.close()
        return queued, flushed

    try:
        queued, flushed = asyncio.run(scenario())
    finally:
        proxy.close()
    assert queued < 0.1 and flushed >= 0.3
    assert redis.Redis.from_url(redis_server.url).exists(NAMESPACE + b"k")


def test_after_a_restart_the_first_read_and_write_on_a_pooled_connection_do_not_miss(redis_server):
    metrics = Metrics()

    async def scenario():
        cache = redis_cache(redis_server.url, metrics)
        await cache.set_many([(b"before", CachedScore(1.0, 3, 3))])
        await cache.flush()
        assert (await cache.get_many([b"before"]))[0] is not None  # both now hold pooled connections
        redis_server.stop()
        redis_server.start()  # same port, empty
        redis.Redis.from_url(redis_server.url).set(NAMESPACE + b"after", CachedScore(2.0, 3, 3).pack())
        read = await cache.get_many([b"after"])
        await cache.set_many([(b"written", CachedScore(3.0, 3, 3))])
        await cache.flush()
        await cache.close()
        return read

    assert asyncio.run(scenario()) == [CachedScore(2.0, 3, 3)]
    assert redis.Redis.from_url(redis_server.url).exists(NAMESPACE + b"written")
    assert value(metrics, "rerankd_cache_errors_total", layer="redis", op="get") == 0
    assert value(metrics, "rerankd_cache_errors_total", layer="redis", op="set") == 0


def test_the_breaker_opens_after_failures_skips_redis_and_closes_when_a_probe_succeeds(redis_server):
    metrics = Metrics()

    def breaker_open() -> float:
        return value(metrics, "rerankd_cache_breaker_open", layer="redis")

    async def scenario():
        cache = LayeredCache(MemoryCache(10, metrics), redis_cache(redis_server.url, metrics, breaker_threshold=3))
        redis_server.stop()
        for i in range(3):
            assert await cache.get_many([f"down{i}".encode()]) == [None]
        assert breaker_open() == 1 and cache.description["redis"]["breaker"]["state"] == "open"
        failed = value(metrics, "rerankd_cache_errors_total", layer="redis", op="get")
        started = time.monotonic()
        for i in range(20):  # skipped: no error, no wait
            assert await cache.get_many([f"skipped{i}".encode()]) == [None]
        skipped_seconds = time.monotonic() - started
        assert value(metrics, "rerankd_cache_errors_total", layer="redis", op="get") == failed
        await cache.set_many([(b"queued while down", CachedScore(1.0, 3, 3))])
        redis_server.start()
        await until(lambda: breaker_open() == 0)  # the first probe is due 1 s after it opened
        await asyncio.wait_for(cache.flush(), 30)  # what was queued while Redis was down reaches it
        assert cache.description["redis"]["breaker"]["state"] == "closed"
        await cache.close()
        return skipped_seconds

    assert asyncio.run(scenario()) < 1.0
    assert redis.Redis.from_url(redis_server.url).exists(NAMESPACE + b"queued while down")


def test_writes_that_could_not_reach_redis_wait_in_the_queue_and_land_when_it_is_back(redis_server):
    metrics = Metrics()
    items = [(f"k{i}".encode(), CachedScore(float(i), 3, 3)) for i in range(5)]

    async def scenario():
        cache = redis_cache(redis_server.url, metrics, breaker_threshold=2)
        redis_server.stop()
        await cache.set_many(items)
        await until(lambda: cache.breaker.is_open)  # the writer failed twice, keeping the batch
        assert cache.description["write_queue"]["pending"] == len(items)
        redis_server.start()
        await asyncio.wait_for(cache.flush(), 30)
        await cache.close()

    asyncio.run(scenario())
    assert redis.Redis.from_url(redis_server.url).dbsize() == len(items)
    assert value(metrics, "rerankd_cache_errors_total", layer="redis", op="set") >= 2
    assert value(metrics, "rerankd_cache_dropped_writes_total", layer="redis", reason="error") == 0


def test_an_error_redis_answers_with_fails_that_write_only_and_leaves_the_breaker_closed(redis_server):
    store = redis.Redis.from_url(redis_server.url)
    store.set(NAMESPACE + b"old", CachedScore(1.0, 3, 3).pack())
    store.config_set("maxmemory-policy", "noeviction")
    store.config_set("maxmemory", 1)  # every write now answers "OOM command not allowed"
    metrics = Metrics()

    async def scenario():
        cache = redis_cache(redis_server.url, metrics, breaker_threshold=1)
        for i in range(3):
            await cache.set_many([(f"new{i}".encode(), CachedScore(2.0, 3, 3))])
            await cache.flush()
        found = await cache.get_many([b"old"])
        await cache.close()
        return found, cache.breaker.is_open

    found, is_open = asyncio.run(scenario())
    assert found == [CachedScore(1.0, 3, 3)] and not is_open
    assert value(metrics, "rerankd_cache_dropped_writes_total", layer="redis", reason="error") == 3
    assert value(metrics, "rerankd_cache_breaker_open", layer="redis") == 0


def test_a_slow_redis_costs_a_request_at_most_the_timeout_until_the_breaker_skips_it(redis_server):
    proxy = DelayProxy(redis_server.port, delay=2.0)
    metrics = Metrics()
    timeout = 0.2

    async def scenario():
        cache = redis_cache(proxy.url, metrics, timeout_seconds=timeout, breaker_threshold=3)
        waits = []
        for i in range(6):
            started = time.monotonic()
            assert await cache.get_many([f"k{i}".encode()]) == [None]
            waits.append(time.monotonic() - started)
        proxy.delay = 0
        await until(lambda: not cache.breaker.is_open)
        await cache.set_many([(b"k", CachedScore(1.0, 3, 3))])
        await cache.flush()
        back = await cache.get_many([b"k"])
        await cache.close()
        return waits, back

    try:
        waits, back = asyncio.run(scenario())
    finally:
        proxy.close()
    # The first three wait out the timeout (generous slack for a busy machine); then Redis is skipped.
    assert all(timeout * 0.9 <= w < timeout + 1.0 for w in waits[:3]), waits
    assert all(w < 0.05 for w in waits[3:]), waits
    assert back == [CachedScore(1.0, 3, 3)]


def test_the_pool_is_bounded_and_a_wait_for_a_connection_counts_against_the_timeout(redis_server):
    proxy = DelayProxy(redis_server.port, delay=0.3)
    metrics = Metrics()

    async def scenario():
        cache = redis_cache(proxy.url, metrics, max_connections=2, timeout_seconds=1.0, breaker_threshold=100)
        started = time.monotonic()
        found = await asyncio.gather(*(cache.get_many([f"k{i}".encode()]) for i in range(12)))
        elapsed = time.monotonic() - started
        await cache.close()
        return found, elapsed

    try:
        found, elapsed = asyncio.run(scenario())
    finally:
        proxy.close()
    assert found == [[None]] * 12
    assert proxy.max_connections <= 2
    assert elapsed < 1.0 + 1.0  # the timeout, plus slack: no read waited longer for a connection
    # Two connections, 0.3 s a reply: some reads could not get one in time, and were misses.
    assert value(metrics, "rerankd_cache_errors_total", layer="redis", op="get") >= 1
