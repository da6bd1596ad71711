"""Pair-level score cache: an in-process LRU, optionally in front of Redis."""

from rerankd.cache.keys import CacheKeyer
from rerankd.cache.store import CachedScore, LayeredCache, MemoryCache, RedisCache, ScoreCache, build_cache

__all__ = ["CacheKeyer", "CachedScore", "LayeredCache", "MemoryCache", "RedisCache", "ScoreCache", "build_cache"]
