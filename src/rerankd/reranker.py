"""The library API: `Reranker.compute_score` and `Reranker.rerank`.

Example:
    >>> from rerankd import Reranker
    >>> reranker = Reranker("BAAI/bge-reranker-v2-m3")          # or a local directory
    >>> reranker.compute_score([("what is a panda?", "The giant panda is a bear native to China.")])
    [0.97...]
    >>> for r in reranker.rerank("what is a panda?", ["hi", "The giant panda is a bear."], top_n=1):
    ...     print(r.index, round(r.score, 3), r.document)

Threads and async: one `Reranker` may be shared. Tokenization runs without a
lock; the model runs one batch at a time behind a lock, so calls from several
threads are safe and overlap their tokenization with each other's inference.
From async code, await `arerank` / `acompute_score`: they run the work in a
worker thread, so the event loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rerankd.engine import EncodedPair
from rerankd.engine.calibration import SIGMOID, Calibration, load_calibrations
from rerankd.engine.chunking import ChunkPolicy, DocumentScore, aggregate, chunk_pairs
from rerankd.engine.setup import build_engine
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model import LoadedModel, load_model
from rerankd.settings import DEFAULT_MODEL, TRUNCATION_MODES, Settings


@dataclass(frozen=True)
class RerankResult:
    """One document of a ranking: its position in the input, its score and its text.

    With truncation="chunk": `chunks`, the windows scored, and `highlight`, the (start, end) characters of
    the best one in `document`.
    """

    index: int
    score: float
    document: str
    chunks: int | None = None
    highlight: tuple[int, int] | None = None


@dataclass(frozen=True)
class ScoreReport:
    """Everything one scoring call measured, for callers that want more than scores.

    Per document: `logits` (for a chunked one, its windows' aggregate), `num_tokens` (all its windows'
    tokens), `truncated`; `chunks` holds each chunked document's windows and highlight (None otherwise).
    """

    logits: np.ndarray
    num_tokens: list[int]
    truncated: list[bool]
    tokenize_seconds: float
    inference_seconds: float
    batches: int
    padded_tokens: int
    calibration: Calibration = SIGMOID
    chunks: list[DocumentScore] | None = None

    def scores(self, normalize: bool = True) -> list[float]:
        """Relevance in 0..1 (the sigmoid, or the model's calibration), or the raw logits."""
        values = self.calibration.relevance(self.logits) if normalize else self.logits.astype(np.float64)
        return [float(v) for v in values]


class Reranker:
    """A reranker that scores exactly like its reference: BAAI FlagEmbedding's `FlagReranker` for cross-encoders,
    `FlagLLMReranker` for bge-reranker-v2-gemma, the model card's code for Qwen3-Reranker.

    Args:
        model: Hugging Face hub id or local directory of a one-label `*ForSequenceClassification` model.
        revision: Hub revision (ignored for local directories).
        device: `auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `cuda:N` or `mps`.
        dtype: `auto` (fp16 on CUDA, fp32 elsewhere), `fp32`, `fp16`, `bf16`, or `int8` (dynamic quantisation
            on CPU, bitsandbytes on CUDA; refused if it ranks a reference set unlike fp32).
        backend: `torch`, `onnx` (a directory made by `rerankd export`), `openvino` (CPU), or `auto` (on the CPU
            the fastest that can run the directory, by a timed warm-up; see docs/backends.md).
        max_length: Most tokens per pair; only the document is truncated to fit (default: the model kind's, 512 for
            cross-encoders, 8192 for Qwen3-Reranker; see docs/models.md).
        query_max_length: Most tokens of the query (default: 3/4 of `max_length`).
        max_batch_tokens: Token budget of one model batch (rows x longest row); default 2048 on CPU, 32768 on GPU.
        max_batch_size: Most pairs in one model batch.
        threads: Intra-op threads for the model on CPU (process-wide for torch; default: the cores this process
            may use).
        model_kind: `auto`, `cross-encoder`, `qwen3-reranker` or `flag-llm-reranker` (docs/models.md).
        instruction: LLM rerankers: the default instruction (Qwen3) or prompt (FlagLLMReranker); calls may pass
            their own.
        prefix_reuse: LLM rerankers: compute the prefix the pairs of a batch share once (same scores).
        calibration: A `calibration.json` from `rerankd calibrate --fit-platt`: normalized scores become its
            calibrated probabilities.
        truncation: A pair over `max_length`: `truncate` keeps the document's first tokens, `chunk` scores it in
            windows and aggregates them, `error` raises. Each call may override it.
        chunk_overlap: Tokens shared by adjacent windows (chunk).
        chunk_aggregate: `max` or `mean` of the windows' logits (chunk).
        max_chunks_per_doc: Most windows per document; the rest is cut and reported truncated (chunk).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        backend: str = "auto",
        max_length: int | None = None,
        query_max_length: int | None = None,
        max_batch_tokens: int | None = None,
        max_batch_size: int = Settings.max_batch_size,
        threads: int | None = None,
        model_kind: str = "auto",
        instruction: str | None = None,
        prefix_reuse: bool = True,
        calibration: str | None = None,
        truncation: str = "truncate",
        chunk_overlap: int = Settings.chunk_overlap,
        chunk_aggregate: str = Settings.chunk_aggregate,
        max_chunks_per_doc: int = Settings.max_chunks_per_doc,
    ) -> None:
        settings = Settings(
            model=model,
            revision=revision,
            device=device,
            dtype=dtype,
            backend=backend,
            max_length=max_length,
            query_max_length=query_max_length,
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
            threads=threads,
            model_kind=model_kind,
            instruction=instruction,
            no_prefix_reuse=not prefix_reuse,
            calibration=(calibration,) if calibration else (),
            truncation=truncation,
            chunk_overlap=chunk_overlap,
            chunk_aggregate=chunk_aggregate,
            max_chunks_per_doc=max_chunks_per_doc,
        )
        self._init(settings, load_model(settings))

    @classmethod
    def from_settings(cls, settings: Settings) -> Reranker:
        reranker = cls.__new__(cls)
        reranker._init(settings, load_model(settings))
        return reranker

    def _init(self, settings: Settings, loaded: LoadedModel) -> None:
        engine = build_engine(settings, loaded)
        self.settings = settings
        self.loaded = loaded
        self.encoder = engine.encoder
        self.scorer = engine.scorer
        self.calibration = load_calibrations(settings.calibration, [settings.model])[settings.model]
        self._model_lock = threading.Lock()

    @property
    def is_fixture(self) -> bool:
        """True for a random-weight test model: its scores are not relevance."""
        return self.loaded.fixture is not None

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        on_batch: Callable[[int], None] | None = None,
        *,
        truncation: str | None = None,
        instruction: str | None = None,
    ) -> ScoreReport:
        """Logits and measurements for `pairs`, in input order; `truncation` overrides the reranker's."""
        return self._score(_check_pairs(pairs), on_batch, truncation, instruction)

    def score_query(
        self,
        query: str,
        documents: Sequence[str],
        on_batch: Callable[[int], None] | None = None,
        *,
        truncation: str | None = None,
        instruction: str | None = None,
    ) -> ScoreReport:
        """Like `score` for one query against many documents; the query is tokenized once."""
        _check_text(query, "query")
        for i, doc in enumerate(documents):
            _check_text(doc, f"documents[{i}]")
        return self._score([(query, d) for d in documents], on_batch, truncation, instruction)

    def _score(
        self, pairs: list[tuple[str, str]], on_batch: Callable[[int], None] | None, truncation: str | None,
        instruction: str | None,
    ) -> ScoreReport:
        mode = truncation or self.settings.truncation
        if mode not in TRUNCATION_MODES:
            raise RerankdError(ErrorKind.INVALID_INPUT,
                               f"truncation must be one of {', '.join(TRUNCATION_MODES)}, got {mode!r}")
        started = time.perf_counter()
        if mode != "chunk":
            encoded = self.encoder.encode_pairs(pairs, **self._instruction(instruction))
            if mode == "error":
                for i, pair in enumerate(encoded):
                    if pair.truncated:
                        raise RerankdError(
                            ErrorKind.INPUT_TOO_LARGE,
                            f"pair {i} has over {self.encoder.max_length} tokens (max_length); shorten it, or use "
                            "truncation='truncate' or 'chunk'",
                        )
            return self._run(encoded, time.perf_counter() - started, on_batch)
        policy = ChunkPolicy.from_settings(self.settings)
        documents = chunk_pairs(self.encoder, pairs, policy, **self._instruction(instruction))
        windows = [w.pair for d in documents for w in d.windows]
        report = self._run(windows, time.perf_counter() - started, on_batch)
        scores = aggregate(documents, report.logits, policy.aggregate)
        return ScoreReport(
            logits=np.array([s.logit for s in scores], dtype=np.float32),
            num_tokens=[sum(w.pair.num_tokens for w in d.windows) for d in documents],
            truncated=[d.truncated for d in documents],
            tokenize_seconds=report.tokenize_seconds,
            inference_seconds=report.inference_seconds,
            batches=report.batches,
            padded_tokens=report.padded_tokens,
            calibration=self.calibration,
            chunks=scores,
        )

    def _instruction(self, instruction: str | None) -> dict[str, str]:
        if instruction is None:
            return {}
        _check_text(instruction, "instruction")
        if not getattr(self.encoder, "accepts_instruction", False):
            raise RerankdError(ErrorKind.INVALID_INPUT, f"{self.loaded.source} is a {self.loaded.kind}, which takes "
                                                        "no instruction; only LLM rerankers do")
        return {"instruction": instruction}

    def _run(
        self, encoded: list[EncodedPair], tokenize_seconds: float, on_batch: Callable[[int], None] | None
    ) -> ScoreReport:
        with self._model_lock:
            logits, stats = self.scorer.score(encoded, on_batch)
        return ScoreReport(
            logits=logits,
            num_tokens=[p.num_tokens for p in encoded],
            truncated=[p.truncated for p in encoded],
            tokenize_seconds=tokenize_seconds,
            inference_seconds=stats.seconds,
            batches=stats.batches,
            padded_tokens=stats.padded_tokens,
            calibration=self.calibration,
        )

    def compute_score(
        self, pairs: Sequence[tuple[str, str]], *, normalize: bool = True, truncation: str | None = None,
        instruction: str | None = None,
    ) -> list[float]:
        """Score of each (query, document) pair in input order: sigmoid relevance, or raw logits."""
        return self.score(pairs, truncation=truncation, instruction=instruction).scores(normalize)

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        normalize: bool = True,
        min_score: float | None = None,
        truncation: str | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents sorted by score, best first; equal scores keep input order.

        `top_n` of None, 0, or more than the number of documents returns all of them. Then results whose
        relevance (0..1, calibrated when a calibration is loaded) is below `min_score` (default: the settings'
        `min_score`) are dropped, also when `normalize=False` returns logits. With truncation="chunk", each
        result says how many windows were scored and where the best one is.
        """
        if top_n is not None and top_n < 0:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"top_n must be 0 or more, got {top_n}")
        report = self.score_query(query, documents, truncation=truncation, instruction=instruction)
        scores = report.scores(normalize)
        chunks = report.chunks
        # Ranked on the logits: a calibration keeps their order, but may squeeze scores into ties.
        kept = above_min_score(rank_order(report.logits.tolist(), top_n), report.scores(),
                               self.settings.min_score if min_score is None else min_score)
        return [
            RerankResult(index=i, score=scores[i], document=documents[i],
                         chunks=chunks[i].chunks if chunks else None,
                         highlight=(chunks[i].highlight.start, chunks[i].highlight.end) if chunks else None)
            for i in kept
        ]

    async def acompute_score(
        self, pairs: Sequence[tuple[str, str]], *, normalize: bool = True, truncation: str | None = None
    ) -> list[float]:
        """`compute_score` in a worker thread, for async code."""
        return await asyncio.to_thread(self.compute_score, pairs, normalize=normalize, truncation=truncation)

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        normalize: bool = True,
        min_score: float | None = None,
        truncation: str | None = None,
    ) -> list[RerankResult]:
        """`rerank` in a worker thread, for async code."""
        return await asyncio.to_thread(
            self.rerank, query, documents, top_n=top_n, normalize=normalize, min_score=min_score,
            truncation=truncation,
        )


def rank_order(scores: Sequence[float], top_n: int | None = None) -> list[int]:
    """Indices best first; equal scores keep input order; top_n of None or 0 means all."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order[:top_n] if top_n else order


def above_min_score(order: Sequence[int], relevance: Sequence[float], min_score: float | None) -> list[int]:
    """The indices of `order` whose relevance is at least `min_score` (all of them for None)."""
    if min_score is None:
        return list(order)
    if not 0.0 <= min_score <= 1.0:
        raise RerankdError(ErrorKind.INVALID_INPUT, f"min_score is a relevance score in 0..1, got {min_score:g}")
    return [i for i in order if relevance[i] >= min_score]


def _check_text(value: object, where: str) -> None:
    if not isinstance(value, str):
        raise RerankdError(ErrorKind.INVALID_INPUT, f"{where} must be a string, got {type(value).__name__}")


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
        raise RerankdError(
            ErrorKind.INVALID_INPUT, "compute_score takes a list of (query, document) pairs; wrap a single pair in []"
        )
    checked = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"pairs[{i}] must be a (query, document) pair")
        _check_text(pair[0], f"pairs[{i}][0]")
        _check_text(pair[1], f"pairs[{i}][1]")
        checked.append((pair[0], pair[1]))
    return checked
