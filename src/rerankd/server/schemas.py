"""Request and response models of every API dialect; they generate the OpenAPI page at /docs.

One rerank request model serves Cohere (v1 and v2), Jina, vLLM and TEI
clients: TEI's body carries `texts` where the others carry `documents`.
Unknown fields are accepted and ignored, because newer client SDKs add fields
(`max_chunks_per_doc`, `priority`, `relevant_spans`, ...).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_EXAMPLE_DOCS = [
    "The giant panda's diet is over 99% bamboo.",
    "Panda Express is an American fast-food chain.",
]


class LengthControls(BaseModel):
    """What to do with a pair over the length limit, per request; docs/api.md has which field wins."""

    truncation: Literal["truncate", "chunk", "error"] | None = Field(
        None,
        description="rerankd: a pair over the limit keeps the document's start (truncate), is scored in overlapping "
        "windows (chunk), or is refused with 413 (error). Missing: the request's other fields, then --truncation.",
    )
    chunk_overlap: int | None = Field(None, ge=0, description="chunk: tokens adjacent windows share (--chunk-overlap).")
    chunk_aggregate: Literal["max", "mean"] | None = Field(
        None, description="chunk: the document's logit is the max or the mean of its windows' (--chunk-aggregate)."
    )
    max_chunks_per_doc: int | None = Field(
        None, ge=1,
        description="Cohere v1: most windows per document; given without `truncation`, it asks for chunk. At most "
        "the server's --max-chunks-per-doc.",
    )
    return_chunk_scores: bool = Field(False, description="chunk: add each window's score and offsets.")
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="Cohere v2, vLLM: most tokens of each document that are scored (cut past them)."
    )
    truncate_prompt_tokens: int | None = Field(
        None, ge=-1,
        description="vLLM: most tokens of each (query, document) pair, or of each window; -1 means the model's limit.",
    )


class RerankRequest(LengthControls):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"query": "What do giant pandas eat?", "documents": _EXAMPLE_DOCS, "top_n": 1},
                {"query": "What do giant pandas eat?", "texts": _EXAMPLE_DOCS, "return_text": True},
            ]
        },
    )

    query: str = Field(description="The query the documents are ranked for.")
    documents: list[str | dict[str, Any]] | None = Field(
        None,
        description="Cohere/Jina/vLLM: strings, or objects with a `text` field (or the fields named in `rank_fields`).",
    )
    texts: list[str] | None = Field(None, description="TEI: the documents; the answer is TEI's bare array.")
    model: str | None = Field(None, description="Served model name; any name is accepted when one model is served.")
    top_n: int | None = Field(None, ge=0, description="Return the best N; missing, 0 or more than given means all.")
    return_documents: bool | None = Field(
        None, description="Include each document's text (default true; the strings 'true'/'false' work too)."
    )
    rank_fields: list[str] | None = Field(
        None, description="Cohere v1: fields of object documents to rank on, joined as 'field: value' lines."
    )
    raw_scores: bool = Field(False, description="TEI: `score` is the logit. Others: add `raw_score` beside the score.")
    return_text: bool = Field(False, description="TEI: include each text.")
    truncate: bool | None = Field(
        None, description="TEI: cut pairs over the limit (true) or answer 413 (false); missing follows the server."
    )
    truncation_direction: Literal["Right", "right", "Left", "left"] = Field(
        "Right",
        description="TEI: the side of a document that is cut; Left keeps its end (cross-encoders; not with chunk).",
    )
    min_score: float | None = Field(
        None, ge=0, le=1,
        description="rerankd: drop results whose relevance score (0..1, calibrated when the model has a calibration) "
        "is below this, after top_n; also with raw_scores. Missing: the server's --min-score.",
    )
    instruction: str | None = Field(
        None, description="LLM rerankers: the task instruction (qwen3-reranker) or prompt (flag-llm-reranker); "
                          "missing means the server's --instruction or the model card's. Refused by cross-encoders."
    )

    @model_validator(mode="after")
    def _one_document_list(self) -> RerankRequest:
        if self.documents is None and self.texts is None:
            raise ValueError("give the documents to rank as `documents` (or `texts`, TEI's name)")
        if self.documents is not None and self.texts is not None:
            raise ValueError("give either `documents` or `texts`, not both")
        return self


class DocumentText(BaseModel):
    text: str


class Highlight(BaseModel):
    start: int = Field(description="First character of the window in the document's text (Python str index).")
    end: int = Field(description="One past its last character: the window's text is text[start:end].")


class ChunkScore(BaseModel):
    start: int
    end: int
    score: float = Field(description="Sigmoid of the window's logit.")
    raw_score: float


class ChunkInfo(BaseModel):
    """Present for documents scored with truncation=chunk."""

    chunks: int | None = Field(None, description="chunk: how many windows of the document were scored.")
    highlight: Highlight | None = Field(None, description="chunk: the best window's characters in the document.")
    chunk_scores: list[ChunkScore] | None = Field(None, description="With return_chunk_scores: every window.")


class RerankResult(ChunkInfo):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(
        description="Sigmoid of the logit, 0..1; the calibrated probability when the model has a --calibration."
    )
    raw_score: float | None = Field(None, description="The logit, when `raw_scores` is true.")
    truncated: bool = Field(description="Whether the pair was cut to fit the token limit.")
    document: DocumentText | dict[str, Any] | None = Field(
        None,
        description="Unless `return_documents` is false: `{text}` for a string document, the object as sent for an "
        "object document.",
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class Tokens(BaseModel):
    input_tokens: int
    output_tokens: int = 0


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: Tokens
    warnings: list[str] | None = None
    below_min_score: int | None = Field(
        None, description="rerankd: how many of the top_n results min_score dropped; present when one applied."
    )


class RerankResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5f1c1f8e-2b7a-4c55-9d55-2f9c2f0c8d11",
                    "model": "BAAI/bge-reranker-v2-m3",
                    "results": [
                        {"index": 0, "relevance_score": 0.98, "truncated": False,
                         "document": {"text": _EXAMPLE_DOCS[0]}}
                    ],
                    "usage": {"prompt_tokens": 38, "total_tokens": 38},
                    "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                             "tokens": {"input_tokens": 38, "output_tokens": 0}},
                }
            ]
        }
    )

    id: str
    model: str
    results: list[RerankResult]
    usage: Usage
    meta: Meta


class TEIRank(ChunkInfo):
    index: int
    score: float = Field(description="Sigmoid of the logit (calibrated with a --calibration), or the logit with "
                         "`raw_scores`.")
    text: str | None = None


class ScoreRequest(LengthControls):
    """vLLM's /score: text_1 against text_2, one to one, one to many, or pair by pair."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"text_1": "What do giant pandas eat?", "text_2": _EXAMPLE_DOCS}]},
    )

    model: str | None = None
    text_1: str | list[str]
    text_2: str | list[str]
    instruction: str | None = Field(None, description="LLM rerankers: as in /rerank.")


class ScoreData(ChunkInfo):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    """Readable by Cohere (`message`), Jina (`detail`) and vLLM/OpenAI (`error`) clients."""

    message: str
    detail: str
    error: ErrorDetail


class TEIErrorResponse(BaseModel):
    error: str
    error_type: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rerankd"
    max_model_len: int
    kind: str | None = Field(
        description="How the model scores a pair: cross-encoder, qwen3-reranker or flag-llm-reranker (null while "
                    "it loads)."
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ServedModelInfo(BaseModel):
    name: str
    source: str
    revision: str | None
    model_type: str
    kind: str = Field(description="How the model scores a pair: cross-encoder, qwen3-reranker or flag-llm-reranker.")
    backend: str
    backend_timings: dict[str, float] | None = Field(
        None, description="With --backend auto on the CPU: seconds per warm-up batch of each backend measured; "
                          "`backend` is the fastest.", examples=[{"torch": 0.412, "onnx": 0.37, "openvino": 0.318}])
    device: str
    dtype: str
    max_input_length: int
    is_fixture: bool
    calibration: str | None = Field(
        None, description="The --calibration file whose probabilities relevance_score is; null: the sigmoid."
    )


class Info(BaseModel):
    model_id: str
    model_type: Literal["reranker"] = "reranker"
    model_dtype: str | None
    version: str
    max_input_length: int
    max_documents: int
    max_document_chars: int
    max_batch_tokens: int
    max_batch_size: int
    max_queued_pairs: int
    max_concurrent_requests: int
    max_queue_wait: float = Field(description="Seconds of queued work past which a new request gets 429.")
    request_timeout: float
    truncation: str
    chunk_overlap: int = Field(description="With truncation chunk: tokens adjacent windows share.")
    chunk_aggregate: str = Field(description="With truncation chunk: max or mean of the windows' logits.")
    max_chunks_per_doc: int = Field(description="Most windows per document; a request may ask for fewer.")
    cache: dict[str, Any] | None = Field(
        description="Score cache configuration and state (for Redis: its circuit breaker and the writes not yet "
                    "sent); null when it is off."
    )
    models: list[ServedModelInfo]
    state: str


class Status(BaseModel):
    status: str
    reason: str | None = Field(default=None, description="Why the server is not healthy, when it is not.")
