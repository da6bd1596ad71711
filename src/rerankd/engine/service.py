"""One served model's request path: admission, score cache, tokenization, the scheduler, and back.

Every way of serving (one process, `--workers`, Ray replicas) runs requests
through a `ScoringService`; the HTTP layer above only validates and shapes
answers. The order matters: a request is admitted or refused before any work
is spent on it, then cached pairs are looked up, the rest tokenized off the
event loop, admitted again on their exact size, and queued for the model.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from rerankd.cache import CachedScore, CacheKeyer, ScoreCache
from rerankd.corpus import corpus_lines
from rerankd.engine.admission import Admission, InFlightLimit, Permit, TokenEstimator
from rerankd.engine.batching import collate
from rerankd.engine.chunking import ChunkPolicy, DocumentScore, aggregate, chunk_pairs
from rerankd.engine.encoding import EncodedPair, PairEncoder
from rerankd.engine.llm_encoding import check_lengths
from rerankd.engine.scheduler import Scheduler
from rerankd.engine.scoring import BatchScorer
from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import Settings
from rerankd.telemetry import EngineMetrics

log = logging.getLogger(__name__)

# The first pass of the warm-up pays for allocation and kernel selection; when it is this quick, the fastest
# of a few more passes measures the steady speed that seeds the throughput estimate.
_REMEASURE_BELOW_SECONDS = 2.0
_REMEASURES = 3


@dataclass(frozen=True)
class _Run:
    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float
    cache_hits: int


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
    chunks: list[DocumentScore] | None = None  # with truncation="chunk": each document's windows

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


class ScoringService:
    """Scores requests for one model under one `Settings`.

    Args:
        name: The served model's name (metrics, errors).
        settings: Limits and truncation policy.
        encoder: Tokenizes pairs with FlagEmbedding's semantics.
        scorer: Runs batches on the model's backend.
        keyer: Score-cache keys for this model (identity, backend, dtype and length policy).
        cache: The score cache, or None.
        tokenize_pool: Threads that tokenize, so the event loop never does.
        in_flight: The server-wide limit on requests in flight.

    `warm_up()` must run before the first request: it starts the model thread.
        metrics: Where admission, tokenization and scheduler figures go.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        encoder: PairEncoder,
        scorer: BatchScorer,
        keyer: CacheKeyer,
        cache: ScoreCache | None,
        tokenize_pool: Executor,
        in_flight: InFlightLimit,
        metrics: EngineMetrics,
    ) -> None:
        self.name = name
        self.settings = settings
        self.encoder = encoder
        self.scorer = scorer
        self.keyer = keyer
        self.cache = cache
        self.metrics = metrics
        self._tokenize_pool = tokenize_pool
        self.chunking = ChunkPolicy.from_settings(settings)
        self.estimator = TokenEstimator(_tokens_per_char(encoder))
        self.scheduler = Scheduler(scorer, name, metrics)
        self.admission = Admission(
            self.scheduler, in_flight, max_queue_wait=settings.queue_wait_limit,
            max_queued_pairs=settings.max_queued_pairs, request_timeout=settings.request_timeout, metrics=metrics,
        )

    def warm_up(self) -> float:
        """Run one batch of the full token budget, start the model thread, and return the tokens/s measured.

        A budget too big for the device fails here, at start, rather than under live traffic.
        """
        width = self.encoder.max_length
        rows = max(1, min(self.scorer.max_batch_size, self.scorer.max_batch_tokens // width))
        pairs = self.encoder.encode("warm up", ["warm up " * width] * rows)
        tokens = sum(p.num_tokens for p in pairs)
        batch = collate(pairs, self.encoder.pad_id, self.encoder.with_token_types, self.scorer.pad_to_multiple_of)
        seconds = self._timed_forward(batch, rows, width)
        if seconds < _REMEASURE_BELOW_SECONDS:
            seconds = min(self._timed_forward(batch, rows, width) for _ in range(_REMEASURES))
        tokens_per_second = tokens / max(seconds, 1e-9)
        self.scheduler.start(tokens_per_second)
        return tokens_per_second

    def _timed_forward(self, batch: dict[str, np.ndarray], rows: int, width: int) -> float:
        backend = self.scorer.backend
        started = time.perf_counter()
        try:
            backend.forward(batch)
        except Exception as exc:
            if not backend.is_out_of_memory(exc):
                raise
            backend.release_memory()
            raise RerankdError(
                ErrorKind.MODEL_LOAD,
                f"one batch of the full token budget ({rows} x {width} = {rows * width} tokens) does not fit on "
                f"{backend.device}; lower --max-batch-tokens (now {self.scorer.max_batch_tokens}) or --max-length",
            ) from exc
        return time.perf_counter() - started

    async def score(
        self,
        query: str | list[str],
        documents: list[str],
        *,
        max_length: int | None = None,
        max_document_tokens: int | None = None,
        truncation: str = "truncate",
        keep: str = "start",
        chunking: ChunkPolicy | None = None,
        instruction: str | None = None,
    ) -> Scored:
        """Score one query against `documents`, or, given a list of queries, each query with its document.

        `truncation` is `truncate` (a document that does not fit keeps its start, or with keep="end" its
        end), `chunk` (windows under `chunking`, default the settings'), or `error`. Cached pairs and windows
        skip the model; identical ones in one request are scored once. `instruction` is an LLM reranker's
        instruction or prompt (None: the server's default).
        """
        deadline = self.scheduler.clock() + self.settings.request_timeout
        queries = [query] * len(documents) if isinstance(query, str) else query
        self._check_input(queries, documents, max_length)
        instruction = self._instruction(instruction)
        check_lengths(self.encoder, keep)
        limit = min(max_length, self.encoder.max_length) if max_length else self.encoder.max_length
        if truncation == "chunk":
            return await self._score_chunked(queries, documents, max_length, max_document_tokens,
                                             chunking or self.chunking, deadline, limit, instruction)
        mode = truncation if keep == "start" else f"{truncation}-keep-end"
        keys = [self.keyer.key(q, d, max_length, max_document_tokens, mode, instruction)
                for q, d in zip(queries, documents)]
        estimate = sum(self._estimate(q, d, limit) for q, d in zip(queries, documents))
        permit = self.admission.admit(len(documents), estimate)

        def encode(todo: list[int]) -> list[EncodedPair]:
            # An LLM encoder takes the instruction; it keeps a document's start only (check_lengths).
            options = {"instruction": instruction} if instruction is not None else {"keep": keep}
            pairs = self.encoder.encode_pairs([(queries[i], documents[i]) for i in todo], max_length,
                                              max_document_tokens, **options)
            # Only uncut pairs were tokenized whole; a cut one prices at the limit whatever its length.
            special = self.encoder.template.num_special_tokens
            whole = [(i, p) for i, p in zip(todo, pairs, strict=True) if not p.truncated]
            self.estimator.observe(sum(len(queries[i]) + len(documents[i]) for i, _ in whole),
                                   sum(p.full_length - special for _, p in whole))
            # A cap the request asked for (max_tokens_per_doc, truncate_prompt_tokens) is truncation it accepted.
            # Cached pairs need no check: the mode is part of their key, and "error" never stores a cut pair.
            if truncation == "error" and max_length is None and max_document_tokens is None:
                for i, pair in zip(todo, pairs, strict=True):
                    if pair.truncated:
                        raise self._too_long(queries[i], documents[i], i)
            return pairs

        values, run = await self._run(keys, encode, permit, deadline)
        truncated = [v.truncated for v in values]
        self.metrics.truncated(self.name, sum(truncated))
        return Scored(
            logits=np.array([v.logit for v in values], dtype=np.float32),
            num_tokens=[v.num_tokens for v in values],
            truncated=truncated,
            tokenize_seconds=run.tokenize_seconds,
            queue_seconds=run.queue_seconds,
            inference_seconds=run.inference_seconds,
            cache_hits=run.cache_hits,
        )

    async def _score_chunked(
        self, queries: list[str], documents: list[str], max_length: int | None, max_document_tokens: int | None,
        policy: ChunkPolicy, deadline: float, limit: int, instruction: str | None,
    ) -> Scored:
        """Documents in windows: each window is an ordinary pair for the cache and the scheduler."""
        estimates = [self._estimate_windows(q, d, limit, policy) for q, d in zip(queries, documents)]
        permit = self.admission.admit(sum(n for n, _ in estimates), sum(t for _, t in estimates))
        try:
            started = time.perf_counter()
            chunk = functools.partial(chunk_pairs, self.encoder, list(zip(queries, documents)), policy, max_length,
                                      max_document_tokens, instruction)
            chunked = await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, chunk)
            chunk_seconds = time.perf_counter() - started
        except BaseException:
            permit.release()
            raise
        windows = [(q, w.pair) for q, d in zip(queries, chunked) for w in d.windows]
        # One entry per window, keyed by its ids: a repeated document, or a window two documents share, is free.
        keys = [self.keyer.key(q, " ".join(map(str, pair.input_ids)), max_length, None, "chunk", instruction)
                for q, pair in windows]
        values, run = await self._run(keys, lambda todo: [windows[i][1] for i in todo], permit, deadline)
        scores = aggregate(chunked, np.array([v.logit for v in values], dtype=np.float32), policy.aggregate)
        truncated = [d.truncated for d in chunked]
        self.metrics.truncated(self.name, sum(truncated))
        per_document = np.cumsum([0, *(len(d.windows) for d in chunked)])
        tokens = [v.num_tokens for v in values]
        return Scored(
            logits=np.array([s.logit for s in scores], dtype=np.float32),
            num_tokens=[sum(tokens[a:b]) for a, b in zip(per_document[:-1], per_document[1:])],
            truncated=truncated,
            tokenize_seconds=chunk_seconds + run.tokenize_seconds,
            queue_seconds=run.queue_seconds,
            inference_seconds=run.inference_seconds,
            cache_hits=run.cache_hits,
            chunks=scores,
        )

    async def _run(
        self, keys: list[bytes], encode: Callable[[list[int]], list[EncodedPair]], permit: Permit, deadline: float
    ) -> tuple[list[CachedScore], _Run]:
        """The value of every key: from the cache, or encoded (off the event loop), admitted again on its exact
        size and scored by the scheduler. Releases `permit`."""
        try:
            first: dict[bytes, int] = {}  # key -> position of its first pair
            for i, key in enumerate(keys):
                first.setdefault(key, i)
            unique = list(first)
            found = await self.cache.get_many(unique) if self.cache is not None else [None] * len(unique)
            todo = [first[k] for k, v in zip(unique, found, strict=True) if v is None]

            started = time.perf_counter()
            pairs: list[EncodedPair] = []
            if todo:
                pairs = await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, encode, todo)
            tokenize_seconds = time.perf_counter() - started
            self.metrics.observe_tokenize(self.name, tokenize_seconds)
            permit.confirm(len(pairs), sum(p.num_tokens for p in pairs))
            job = self.scheduler.submit(pairs, deadline)
            permit.queued()
            try:
                batched = await asyncio.wrap_future(job.future)
            finally:
                self.scheduler.cancel(job)  # a no-op once answered; drops the pairs when the caller gave up
        finally:
            permit.release()

        by_key = {k: v for k, v in zip(unique, found, strict=True) if v is not None}
        scored = [
            (keys[i], CachedScore(float(logit), pair.num_tokens, pair.full_length))
            for i, pair, logit in zip(todo, pairs, batched.logits, strict=True)
        ]
        by_key.update(scored)
        if self.cache is not None and scored:
            await self.cache.set_many(scored)
        run = _Run(tokenize_seconds, batched.queue_seconds, batched.inference_seconds, len(unique) - len(todo))
        return [by_key[k] for k in keys], run

    def _instruction(self, instruction: str | None) -> str | None:
        """The instruction a request's pairs are scored with: its own, else the model's default; None for a
        cross-encoder, which takes none."""
        if not getattr(self.encoder, "accepts_instruction", False):
            if instruction is not None:
                raise RerankdError(ErrorKind.INVALID_INPUT, f"model {self.name!r} is a cross-encoder and takes no "
                                                            "instruction; only LLM rerankers do (docs/models.md)")
            return None
        if instruction is not None and len(instruction) > self.settings.max_document_chars:
            raise RerankdError(ErrorKind.INPUT_TOO_LARGE, f"the instruction has {len(instruction)} characters, over "
                                                          f"the limit of {self.settings.max_document_chars}")
        return instruction if instruction is not None else self.encoder.default_instruction

    def _check_input(self, queries: list[str], documents: list[str], max_length: int | None) -> None:
        smallest = self.encoder.template.num_special_tokens + 1
        if max_length is not None and max_length < smallest:
            raise RerankdError(
                ErrorKind.INVALID_INPUT,
                f"a pair limit of {max_length} tokens leaves no room: it must be at least {smallest} (the model's "
                f"{smallest - 1} special tokens and one query token)",
            )
        limit = self.settings.max_document_chars
        texts = [*(("query", q) for q in dict.fromkeys(queries)),
                 *((f"documents[{i}]", d) for i, d in enumerate(documents))]
        for where, text in texts:
            if len(text) > limit:
                raise RerankdError(
                    ErrorKind.INPUT_TOO_LARGE,
                    f"{where} has {len(text)} characters, over the limit of {limit} (--max-document-chars)",
                )

    def _estimate(self, query: str, document: str, limit: int) -> int:
        """A pair's tokens before tokenizing it: capped as the encoder will cap it."""
        query_tokens = min(self.estimator.tokens(len(query)), self.encoder.query_max_length)
        return min(limit, self.encoder.template.num_special_tokens + query_tokens + self.estimator.tokens(len(document)))

    def _estimate_windows(self, query: str, document: str, limit: int, policy: ChunkPolicy) -> tuple[int, int]:
        """A document's windows and their tokens before tokenizing it."""
        fixed = self.encoder.template.num_special_tokens + min(self.estimator.tokens(len(query)),
                                                               self.encoder.query_max_length)
        room = max(1, limit - fixed)
        tokens = self.estimator.tokens(len(document))
        step = max(1, room - min(policy.overlap, room // 2))
        windows = min(policy.max_chunks, 1 + max(0, tokens - room + step - 1) // step)
        return windows, min(windows * limit, windows * fixed + tokens + (windows - 1) * policy.overlap)

    def _too_long(self, query: str, document: str, index: int) -> RerankdError:
        # The encoder stopped one token past the limit; the message counts this one pair whole, to say by how much.
        query_tokens, document_tokens = map(len, self.encoder.token_ids([query, document]))
        full_length = query_tokens + document_tokens + self.encoder.template.num_special_tokens
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


def _tokens_per_char(encoder: PairEncoder) -> float:
    """The tokenizer's tokens per character on the bundled English and Chinese text: the estimate's seed."""
    lines = corpus_lines()
    return sum(len(ids) for ids in encoder.token_ids(lines)) / max(1, sum(len(line) for line in lines))
