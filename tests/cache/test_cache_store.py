"""The in-process LRU, the layered cache, and the values both keep."""

from __future__ import annotations

import asyncio
import struct

import pytest

from rerankd.cache import CachedScore, LayeredCache, MemoryCache
from rerankd.telemetry import NO_METRICS


def run(coro):
    return asyncio.run(coro)


def test_values_round_trip_and_report_truncation():
    value = CachedScore(-1.25, 512, 900)
    assert CachedScore.unpack(value.pack()) == value and value.truncated
    assert not CachedScore(0.5, 10, 10).truncated


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 11, CachedScore(1.0, 3, 3).pack() + b"\x00", struct.pack("<fII", float("nan"), 3, 3),
     struct.pack("<fII", float("inf"), 3, 3), struct.pack("<fII", float("-inf"), 3, 3),
     struct.pack("<fII", 1.0, 0, 0), struct.pack("<fII", 1.0, 9, 3)],
    ids=["empty", "short", "long", "nan", "inf", "-inf", "no-tokens", "kept-more-than-it-had"],
)
def test_bytes_that_are_not_a_score_unpack_to_none(data):
    assert CachedScore.unpack(data) is None


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

    def cache_invalid(self, layer: str, values: int) -> None:
        pass

    def cache_dropped(self, layer: str, pairs: int, reason: str) -> None:
        pass

    def cache_breaker(self, layer: str, is_open: bool) -> None:
        pass


def test_memory_cache_reports_hits_and_misses_through_the_metrics_protocol():
    metrics = RecordingMetrics()
    cache = MemoryCache(10, metrics)

    async def scenario():
        await cache.set_many([(b"a", CachedScore(1.0, 3, 3))])
        await cache.get_many([b"a", b"b", b"c"])

    run(scenario())
    assert metrics.lookups == [("memory", 1, 2)] and metrics.errors == []


def test_the_layered_cache_asks_the_shared_store_only_for_what_the_lru_lacks_and_keeps_what_it_finds():
    metrics = RecordingMetrics()
    local, shared = MemoryCache(10, metrics), MemoryCache(10, NO_METRICS)
    cache = LayeredCache(local, shared)

    async def scenario():
        await shared.set_many([(b"remote", CachedScore(2.0, 4, 4))])
        await local.set_many([(b"local", CachedScore(1.0, 3, 3))])
        first = await cache.get_many([b"local", b"remote", b"nowhere"])
        second = await local.get_many([b"remote"])
        await cache.set_many([(b"new", CachedScore(3.0, 5, 5))])
        return first, second, await shared.get_many([b"new"])

    first, second, written = run(scenario())
    assert first == [CachedScore(1.0, 3, 3), CachedScore(2.0, 4, 4), None]
    assert second == [CachedScore(2.0, 4, 4)] and written == [CachedScore(3.0, 5, 5)]
    assert cache.description["kind"] == "memory+memory"
