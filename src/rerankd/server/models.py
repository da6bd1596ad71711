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
    ) -> None:
        self.name = name
        self.settings = settings
        self.loaded = loaded
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
        """Score one query against `documents`, or, given a list of queries, each query with its document."""
        queries = [query] if isinstance(query, str) else query
        limit = self.settings.max_document_chars
        texts = [*(("query", q) for q in queries), *((f"documents[{i}]", d) for i, d in enumerate(documents))]
        for where, text in texts:
            if len(text) > limit:
                raise RerankdError(
                    ErrorKind.INPUT_TOO_LARGE,
                    f"{where} has {len(text)} characters, over the limit of {limit} (--max-document-chars)",
                )
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        if isinstance(query, str):
            encode = functools.partial(self.encoder.encode, query, documents, max_length, max_document_tokens)
        else:
            encode = functools.partial(self.encoder.encode_pairs, list(zip(query, documents, strict=True)), max_length)
        pairs = await loop.run_in_executor(self._tokenize_pool, encode)
        tokenize_seconds = time.perf_counter() - started
        self.metrics.tokenize_seconds.labels(self.name).observe(tokenize_seconds)
        truncated = [p.truncated for p in pairs]
        if any(truncated) and not truncate:
            i = truncated.index(True)
            cap = min(max_length or self.encoder.max_length, self.encoder.max_length)
            raise RerankdError(
                ErrorKind.INPUT_TOO_LARGE,
                f"documents[{i}] makes a pair of {pairs[i].full_length} tokens with the query, over the limit of "
                f"{cap} tokens; shorten it, or allow truncation",
            )
        self.metrics.truncated_documents.labels(self.name).inc(sum(truncated))
        batched = await self.batcher.score(pairs)
        return Scored(
            logits=batched.logits,
            num_tokens=[p.num_tokens for p in pairs],
            truncated=truncated,
            tokenize_seconds=tokenize_seconds,
            queue_seconds=batched.queue_seconds,
            inference_seconds=batched.inference_seconds,
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
        served = ServedModel(name, settings, loaded, build_engine(settings, loaded), self.metrics, self._tokenize_pool)
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

    def close(self) -> None:
        for served in self.models.values():
            served.batcher.stop(timeout=5)
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
