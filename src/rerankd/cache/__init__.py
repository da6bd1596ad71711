"""Pair-level score cache: an in-process LRU, optionally in front of Redis."""

from rerankd.cache.breaker import CircuitBreaker
from rerankd.cache.keys import CacheKeyer
from rerankd.cache.redis_store import RedisCache
from rerankd.cache.store import CachedScore, LayeredCache, MemoryCache, ScoreCache
from rerankd.settings import Settings
from rerankd.telemetry import CacheMetrics

__all__ = ["CacheKeyer", "CachedScore", "CircuitBreaker", "LayeredCache", "MemoryCache", "RedisCache", "ScoreCache",
           "build_cache"]


def build_cache(settings: Settings, metrics: CacheMetrics) -> ScoreCache | None:
    """The cache `settings` ask for: none, the LRU, or the LRU in front of Redis."""
    if settings.no_cache:
        return None
    local = MemoryCache(settings.cache_size, metrics)
    if not settings.cache_url:
        return local
    shared = RedisCache(
        settings.cache_url, ttl_seconds=settings.cache_ttl, timeout_seconds=settings.cache_timeout,
        max_connections=settings.cache_max_connections, write_queue=settings.cache_write_queue,
        breaker_threshold=settings.cache_breaker_threshold, breaker_max_backoff=settings.cache_breaker_backoff,
        metrics=metrics,
    )
    return LayeredCache(local, shared)
