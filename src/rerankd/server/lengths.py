"""Each dialect's length fields, resolved to one set of engine controls (the table in docs/api.md).

The fields measure different things: Cohere v1 `max_chunks_per_doc` counts windows, Cohere v2 and vLLM
`max_tokens_per_doc` caps a document's tokens, vLLM `truncate_prompt_tokens` caps a pair's (or a
window's), TEI `truncate` is a yes/no and `truncation_direction` the side cut. Which mode wins:
rerankd's own `truncation`, then TEI's `truncate`, then `max_chunks_per_doc` (which asks for chunk),
then the server's `--truncation`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rerankd.engine.calibration import Calibration
from rerankd.engine.chunking import ChunkPolicy, DocumentScore
from rerankd.errors import ErrorKind, RerankdError
from rerankd.server.schemas import ChunkInfo, ChunkScore, Highlight, LengthControls
from rerankd.settings import Settings


@dataclass(frozen=True)
class Lengths:
    """Keyword arguments of `ScoringService.score` for one request."""

    truncation: str
    keep: str
    max_length: int | None
    max_document_tokens: int | None
    chunking: ChunkPolicy

    def as_kwargs(self) -> dict[str, object]:
        return {"truncation": self.truncation, "keep": self.keep, "max_length": self.max_length,
                "max_document_tokens": self.max_document_tokens, "chunking": self.chunking}


def resolve_lengths(body: LengthControls, settings: Settings, *, tei_truncate: bool | None = None,
                    keep_end: bool = False) -> Lengths:
    if body.truncation is not None:
        truncation = body.truncation
    elif tei_truncate is not None:
        truncation = "truncate" if tei_truncate else "error"
    elif body.max_chunks_per_doc is not None:
        truncation = "chunk"
    else:
        truncation = settings.truncation
    if keep_end and truncation == "chunk":
        raise RerankdError(ErrorKind.INVALID_INPUT,
                           "truncation_direction Left keeps a document's end when it is truncated; chunk scores all "
                           "of it in windows, so send one or the other")
    chunking = ChunkPolicy(
        overlap=settings.chunk_overlap if body.chunk_overlap is None else body.chunk_overlap,
        aggregate=body.chunk_aggregate or settings.chunk_aggregate,
        # A client may ask for fewer windows than the server allows, not more: the server's is a bound on work.
        max_chunks=min(body.max_chunks_per_doc or settings.max_chunks_per_doc, settings.max_chunks_per_doc),
    )
    pair_cap = body.truncate_prompt_tokens
    return Lengths(truncation, "end" if keep_end else "start", pair_cap if pair_cap and pair_cap > 0 else None,
                   body.max_tokens_per_doc, chunking)


def chunk_info(scored_chunks: list[DocumentScore] | None, index: int, with_windows: bool,
               calibration: Calibration) -> dict[str, object]:
    """The `chunks`/`highlight`/`chunk_scores` fields of one result (none unless the request chunked).

    A window's `score` is on the same scale as `relevance_score`: calibrated when the model has a calibration.
    """
    if scored_chunks is None:
        return {}
    document = scored_chunks[index]
    info = ChunkInfo(
        chunks=document.chunks,
        highlight=Highlight(start=document.highlight.start, end=document.highlight.end),
        chunk_scores=[ChunkScore(start=w.start, end=w.end, score=float(calibration.relevance(w.logit)),
                                  raw_score=w.logit)
                      for w in document.windows] if with_windows else None,
    )
    return {name: getattr(info, name) for name in ChunkInfo.model_fields}
