"""Long documents in token windows: split, score each window as its own pair, aggregate, say where.

The window rule (docs/api.md, "Long documents"), for a query q and a document d:

- q is tokenized and cut to its budget exactly as for any pair (`PairEncoder.query_heads`); the room R
  is what the pair's cap leaves for the document beside q and the special tokens.
- d is tokenized once, without special tokens, and only as far as its windows can use (at most
  `max_chunks` x R tokens, and no further than `max_document_tokens`).
- Window k covers d's tokens [a_k, b_k): a_0 = 0; b_k is the largest word start (a token that begins a
  pre-tokenizer word) with b_k - a_k <= R, or the end of d; the next window starts at the first word start
  at or after b_k - overlap, and after a_k. Windows stop at the end of d or after `max_chunks`; tokens left
  over then are not scored, and the document is reported truncated.
- A window's text is d[start:end], from the tokenizer's offsets of its first and last token. Since it
  starts and ends on word starts, it tokenizes alone to the same ids, so (q, window text) scored as an
  ordinary pair gets the window's score. A single word longer than R tokens is cut between two of its
  tokens; only such a window's text may tokenize differently.
- The document's logit is the max (default, Cohere's choice) or the mean of its windows' logits; its
  highlight is the best window (the first among equals).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rerankd.engine.encoding import EncodedPair, PairEncoder, TextTokens
from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import CHUNK_AGGREGATES, Settings


@dataclass(frozen=True)
class ChunkPolicy:
    """How long documents are windowed for one call."""

    overlap: int = 64
    aggregate: str = "max"
    max_chunks: int = 16

    def __post_init__(self) -> None:
        if self.overlap < 0:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"chunk_overlap must be 0 or more, got {self.overlap}")
        if self.aggregate not in CHUNK_AGGREGATES:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"chunk_aggregate must be one of "
                               f"{', '.join(CHUNK_AGGREGATES)}, got {self.aggregate!r}")
        if self.max_chunks < 1:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"max_chunks_per_doc must be at least 1, got {self.max_chunks}")

    @classmethod
    def from_settings(cls, settings: Settings) -> ChunkPolicy:
        return cls(settings.chunk_overlap, settings.chunk_aggregate, settings.max_chunks_per_doc)


@dataclass(frozen=True)
class Window:
    """One window of a document: its pair, and the characters of the document it covers."""

    pair: EncodedPair
    start: int
    end: int


@dataclass(frozen=True)
class ChunkedDocument:
    windows: list[Window]
    truncated: bool  # tokens past the last window were not scored, or the query was cut


@dataclass(frozen=True)
class WindowScore:
    logit: float
    start: int
    end: int


@dataclass(frozen=True)
class DocumentScore:
    """A chunked document's aggregate logit, its best window (the highlight) and every window's score."""

    logit: float
    highlight: WindowScore
    windows: list[WindowScore]

    @property
    def chunks(self) -> int:
        return len(self.windows)


def chunk_pairs(
    encoder: PairEncoder,
    pairs: Sequence[tuple[str, str]],
    policy: ChunkPolicy,
    max_length: int | None = None,
    max_document_tokens: int | None = None,
    instruction: str | None = None,
) -> list[ChunkedDocument]:
    """Each pair's document cut into windows that fit beside its query; each distinct query is tokenized once.
    An LLM encoder windows its own inputs (`chunk_pairs` of engine/llm_encoding.py), with `instruction`."""
    if hasattr(encoder, "chunk_pairs"):
        return encoder.chunk_pairs(pairs, policy, max_length, max_document_tokens, instruction)
    query_room, query_heads = encoder.query_heads([q for q, _ in pairs], max_length)
    rooms = [encoder.document_room(query_heads[q], query_room, max_length) for q, _ in pairs]
    caps = [room * policy.max_chunks if max_document_tokens is None else min(room * policy.max_chunks,
                                                                              max_document_tokens)
            for room in rooms]
    # One token past the cap says whether the document goes on, and whether the cap falls on a word start.
    documents = encoder.head_tokens([d for _, d in pairs], [cap + 1 for cap in caps])
    chunked = []
    for (query, _), tokens, room, cap in zip(pairs, documents, rooms, caps, strict=True):
        head = query_heads[query]
        query_ids = head[:query_room]
        spans, cut = spans_of(tokens, room, cap, min(policy.overlap, room // 2), policy.max_chunks)
        query_cut = len(head) > query_room
        windows = [
            Window(encoder.pair(query_ids, tokens.ids[a:b], len(head) + b - a),
                   tokens.offsets[a][0] if b > a else 0, tokens.offsets[b - 1][1] if b > a else 0)
            for a, b in spans
        ]
        chunked.append(ChunkedDocument(windows, cut or query_cut))
    return chunked


def spans_of(tokens: TextTokens, room: int, cap: int, overlap: int, max_chunks: int) -> tuple[list[tuple[int, int]], bool]:
    """The windows' token ranges [a, b), and whether tokens were left over."""
    known = len(tokens.ids)
    if known == 0:  # an empty document: one empty window, scored like the pair (query, "")
        return [(0, 0)], False
    end = min(known, cap)  # the last token a window may cover, exclusive
    whole = known <= cap  # every token of the document is within reach
    # Where a window may end or the next begin: word starts, and the document's end when it is reached.
    bounds = [i for i in range(1, end + (known > end)) if tokens.begins_word(i)]
    if whole:
        bounds.append(known)
    spans: list[tuple[int, int]] = []
    a = 0
    while True:
        reach = min(a + room, end)
        k = bisect.bisect_right(bounds, reach) - 1
        b = bounds[k] if k >= 0 and bounds[k] > a else reach  # a word longer than the room is cut inside
        spans.append((a, b))
        if whole and b == known:
            return spans, False
        if len(spans) == max_chunks or b >= end:
            return spans, True
        k = bisect.bisect_left(bounds, max(b - overlap, a + 1))
        a = min(bounds[k], b) if k < len(bounds) else b


def aggregate(documents: Sequence[ChunkedDocument], logits: np.ndarray, how: str) -> list[DocumentScore]:
    """Per-document scores from the windows' logits, which come in document then window order."""
    scores = []
    at = 0
    for doc in documents:
        windows = [WindowScore(float(logit), w.start, w.end)
                   for w, logit in zip(doc.windows, logits[at:at + len(doc.windows)], strict=True)]
        at += len(doc.windows)
        values = [w.logit for w in windows]
        best = windows[int(np.argmax(values))]
        logit = best.logit if how == "max" else float(np.mean(values, dtype=np.float64))
        scores.append(DocumentScore(logit, best, windows))
    return scores
