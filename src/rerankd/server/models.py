"""The models a server serves: loading, warm-up, readiness, and one request's trip through a model."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rerankd.cache import CachedScore, CacheKeyer, ScoreCache, build_cache
from rerankd.engine import EncodedPair
from rerankd.engine.setup import Engine, build_engine
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model import LoadedModel, load_model
from rerankd.server.batcher import DynamicBatcher
from rerankd.server.metrics import Metrics
from rerankd.settings import Settings

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


@dataclass(frozen=True)
class Scored:
    """Scores of one request plus what it cost, stage by stage."""

    logits: np.ndarray
    num_tokens: list[int]
    truncated: list[bool]
    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float
    cache_hits: int = 0

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


class ServedModel:
    def __init__(
        self,
        name: str,
        settings: Settings,
        loaded: LoadedModel,
        engine: Engine,
        metrics: Metrics,
        tokenize_pool: ThreadPoolExecutor,
        cache: ScoreCache | None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.loaded = loaded
        self.cache = cache
        self.keyer = CacheKeyer(
            loaded.identity, engine.scorer.backend.name, loaded.dtype, settings.max_length,
            settings.effective_query_max_length,
        )
        self.encoder = engine.encoder
        self.batcher = DynamicBatcher(engine.scorer, settings.max_queued_pairs, metrics, name)
        self.metrics = metrics
        self._tokenize_pool = tokenize_pool

    def warm_up(self) -> None:
        """One full-length batch before /ready says yes, so the first user doesn't pay for allocation."""
        pairs = self.encoder.encode("warm up", ["warm up " * self.settings.max_length] * 2)
        self.batcher.scorer.run_batch(pairs)

    async def score(
        self,
        query: str | list[str],
        documents: list[str],
        *,
        max_length: int | None = None,
        max_document_tokens: int | None = None,
        truncate: bool = True,
    ) -> Scored:
        """Score one query against `documents`, or, given a list of queries, each query with its document.

        Cached pairs skip tokenization and the model; identical pairs in one request are scored once.
        """
        queries = [query] * len(documents) if isinstance(query, str) else query
        smallest = self.encoder.template.num_special_tokens + 1
        if max_length is not None and max_length < smallest:
            raise RerankdError(
                ErrorKind.INVALID_INPUT,
                f"a pair limit of {max_length} tokens leaves no room: it must be at least {smallest} (the model's "
                f"{smallest - 1} special tokens and one query token)",
            )
        limit = self.settings.max_document_chars
        texts = [*(("query", q) for q in dict.fromkeys(queries)), *((f"documents[{i}]", d) for i, d in enumerate(documents))]
        for where, text in texts:
            if len(text) > limit:
                raise RerankdError(
                    ErrorKind.INPUT_TOO_LARGE,
                    f"{where} has {len(text)} characters, over the limit of {limit} (--max-document-chars)",
                )
        mode = "truncate" if truncate else "error"
        keys = [self.keyer.key(q, d, max_length, max_document_tokens, mode) for q, d in zip(queries, documents)]
        first = {}  # key -> position among the unique pairs
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        unique = list(first)
        found = await self.cache.get_many(unique) if self.cache is not None else [None] * len(unique)
        todo = [first[k] for k, v in zip(unique, found, strict=True) if v is None]

        started = time.perf_counter()
        pairs: list[EncodedPair] = []
        if todo:
            encode = functools.partial(
                self.encoder.encode_pairs, [(queries[i], documents[i]) for i in todo], max_length, max_document_tokens
            )
            pairs = await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, encode)
        tokenize_seconds = time.perf_counter() - started
        self.metrics.tokenize_seconds.labels(self.name).observe(tokenize_seconds)

        # A cap the request asked for (max_tokens_per_doc, truncate_prompt_tokens) is truncation it accepted.
        # Cached pairs need no check: the mode is part of their key, and "error" never stores a cut pair.
        if not truncate and max_length is None and max_document_tokens is None:
            for i, pair in zip(todo, pairs, strict=True):
                if pair.truncated:
                    raise self._too_long(queries[i], i, pair.full_length)
        batched = await self.batcher.score(pairs)
        by_key = {k: v for k, v in zip(unique, found, strict=True) if v is not None}
        scored = [
            (keys[i], CachedScore(float(logit), pair.num_tokens, pair.full_length))
            for i, pair, logit in zip(todo, pairs, batched.logits, strict=True)
        ]
        by_key.update(scored)
        if self.cache is not None and scored:
            await self.cache.set_many(scored)
        values = [by_key[k] for k in keys]
        truncated = [v.truncated for v in values]
        self.metrics.truncated_documents.labels(self.name).inc(sum(truncated))
        return Scored(
            logits=np.array([v.logit for v in values], dtype=np.float32),
            num_tokens=[v.num_tokens for v in values],
            truncated=truncated,
            tokenize_seconds=tokenize_seconds,
            queue_seconds=batched.queue_seconds,
            inference_seconds=batched.inference_seconds,
            cache_hits=len(unique) - len(todo),
        )

    def _too_long(self, query: str, index: int, full_length: int) -> RerankdError:
        query_tokens = len(self.encoder.token_ids([query])[0])
        if query_tokens > self.encoder.query_max_length:
            return RerankdError(
                ErrorKind.INPUT_TOO_LARGE,
                f"the query has {query_tokens} tokens, over its limit of {self.encoder.query_max_length} "
                "(--query-max-length); shorten it, or allow truncation",
            )
        return RerankdError(
            ErrorKind.INPUT_TOO_LARGE,
            f"documents[{index}] makes a pair of {full_length} tokens with the query, over the limit of "
            f"{self.encoder.max_length} tokens (--max-length); shorten it, or allow truncation",
        )


def parse_model_specs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """`NAME=PATH_OR_ID` or a bare `PATH_OR_ID` (named after itself) -> [(name, source)]."""
    specs = []
    for value in values:
        name, sep, source = value.partition("=")
        if not sep:
            name, source = value, value
        if not name or not source:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"--model {value!r}: expected NAME=PATH or PATH")
        specs.append((name, source))
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise RerankdError(ErrorKind.INVALID_INPUT, f"served model names must differ, got {', '.join(names)}")
    return specs


class ModelRegistry:
    """Every served model by name, and the server's readiness."""

    def __init__(self, settings: Settings, specs: list[tuple[str, str]], metrics: Metrics) -> None:
        if not specs:
            raise RerankdError(ErrorKind.INVALID_INPUT, "no model to serve; pass --model")
        self.settings = settings
        self.specs = specs
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.state = State.LOADING
        self.error: str | None = None
        # Tokenization runs here, beside the model threads, so it overlaps inference.
        self._tokenize_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rerankd-tokenize")
        # One cache for every served model: the model's identity is part of each key.
        self.cache = build_cache(
            not settings.no_cache, settings.cache_size, settings.cache_url, settings.cache_ttl,
            settings.cache_timeout, metrics,
        )

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.specs]

    async def start(self) -> None:
        """Load and warm every model off the event loop; the server answers /health meanwhile."""
        try:
            for name, source in self.specs:
                served = await asyncio.to_thread(self._load, name, source)
                served.batcher.start()
                self.models[name] = served
        except Exception as exc:
            self.state = State.FAILED
            self.error = str(exc)
            log.error("model loading failed: %s", exc)
            raise
        if self.state is State.LOADING:
            self.state = State.READY
            log.info("ready: serving %s", ", ".join(self.names))

    def _load(self, name: str, source: str) -> ServedModel:
        settings = self.settings.with_changes(model=source)
        loaded = load_model(settings)
        served = ServedModel(
            name, settings, loaded, build_engine(settings, loaded), self.metrics, self._tokenize_pool, self.cache
        )
        started = time.perf_counter()
        served.warm_up()
        log.info("warmed up %s in %.2f s", name, time.perf_counter() - started)
        return served

    def get(self, name: str | None) -> ServedModel:
        if self.state is not State.READY:
            raise RerankdError(ErrorKind.TIMEOUT, f"the server is not ready ({self.state.value}); retry shortly")
        if name in self.models:
            return self.models[name]
        if not name or (len(self.models) == 1 and not self.settings.strict_model_name):
            return next(iter(self.models.values()))
        raise RerankdError(
            ErrorKind.MODEL_NOT_FOUND, f"model {name!r} is not served here; served models: {', '.join(self.names)}"
        )

    def abort(self, message: str) -> None:
        """Fail every request still waiting for a model with a 503 that says why."""
        for served in self.models.values():
            served.batcher.fail_all(RerankdError(ErrorKind.TIMEOUT, message))

    async def close(self) -> None:
        for served in self.models.values():
            served.batcher.stop(timeout=5)
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            await self.cache.close()
