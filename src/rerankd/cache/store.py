"""Where cached scores live: an LRU dict in the process, and optionally Redis shared by replicas.

The value is the raw logit with the pair's token count and its length before
truncation, so normalized and raw requests share entries and a hit reports
usage and truncation truthfully. Redis (cache/redis_store.py) never fails a
request: what it can't answer in time is a miss.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from typing import NamedTuple, Protocol

from rerankd.telemetry import CacheMetrics

_VALUE = struct.Struct("<fII")


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
    def unpack(cls, data: bytes) -> CachedScore | None:
        """The value `pack` wrote, or None for bytes that can't be one: another size, a logit that is not
        finite, or token counts no pair has (none kept, or more kept than it had). Redis is shared and
        outlives versions, so what comes back is checked rather than trusted."""
        if len(data) != _VALUE.size:
            return None
        value = cls(*_VALUE.unpack(data))
        if not math.isfinite(value.logit) or value.num_tokens == 0 or value.full_length < value.num_tokens:
            return None
        return value


class ScoreCache(Protocol):
    @property
    def description(self) -> dict[str, object]:
        """Configuration and state, for /info."""
        ...

    async def get_many(self, keys: list[bytes]) -> list[CachedScore | None]: ...

    async def set_many(self, items: list[tuple[bytes, CachedScore]]) -> None: ...

    async def flush(self) -> None:
        """Wait until the writes made so far have reached the store (or were dropped)."""
        ...

    async def close(self) -> None: ...


class MemoryCache:
    """A bounded LRU; used from the event loop only, so it needs no lock."""

    def __init__(self, max_entries: int, metrics: CacheMetrics) -> None:
        self.max_entries = max_entries
        self.metrics = metrics
        self._entries: OrderedDict[bytes, CachedScore] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def description(self) -> dict[str, object]:
        return {"kind": "memory", "max_entries": self.max_entries, "entries": len(self._entries)}

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

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        self._entries.clear()


class LayeredCache:
    """The local LRU in front of a shared store: the store is asked only for what the process doesn't hold."""

    def __init__(self, local: MemoryCache, shared: ScoreCache) -> None:
        self.local = local
        self.shared = shared

    @property
    def description(self) -> dict[str, object]:
        shared = self.shared.description
        return {"kind": f"memory+{shared['kind']}", "memory": self.local.description, str(shared["kind"]): shared}

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

    async def flush(self) -> None:
        await self.shared.flush()

    async def close(self) -> None:
        await self.local.close()
        await self.shared.close()

