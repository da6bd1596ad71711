"""HTTP handlers: validate, fan out to a served model, shape the answer for the client's dialect."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rerankd import __version__
from rerankd.engine.service import Scored
from rerankd.errors import ErrorKind, RerankdError
from rerankd.reranker import above_min_score, rank_order
from rerankd.server.lengths import chunk_info, resolve_lengths
from rerankd.server.metrics import Metrics
from rerankd.server.models import ModelRegistry, State
from rerankd.server.schemas import (
    ApiVersion,
    BilledUnits,
    DocumentText,
    ErrorResponse,
    Info,
    Meta,
    ModelCard,
    ModelList,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
    ServedModelInfo,
    Status,
    TEIErrorResponse,
    TEIRank,
    Tokens,
    Usage,
)
from rerankd.settings import Settings

API_VERSION = "2"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "Empty query or bad value"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model name"),
        (413, "Too many documents, body too large, a pair over the limit with truncation off, or more work than "
              "the request timeout allows"),
        (422, "Malformed body or wrong types"),
        (429, "Busy: too many requests in flight or too much work queued ahead; see Retry-After"),
        (503, "Timed out, not ready, or shutting down"),
    ]
}


async def _wait_for_disconnect(request: Request) -> None:
    # After the body is read, the next ASGI message is the disconnect: no polling needed.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _until_done(request: Request, work: Awaitable[Scored], timeout: float) -> Scored:
    """`work`, unless the client leaves or time runs out; either way its queued pairs are dropped."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task in done:
        return task.result()
    task.cancel()
    if gone in done:
        raise HTTPException(499, "the client closed the request")
    raise RerankdError(ErrorKind.TIMEOUT, f"the request did not finish within {timeout:g} s (--request-timeout)")


# What a scored response says about its cost; CORS lets browser clients read them (server/app.py).
COST_HEADERS = ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time", "x-cache-hits")


def _timing_headers(response: Response, scored: Scored, started: float) -> None:
    seconds = (scored.tokenize_seconds, scored.queue_seconds, scored.inference_seconds, time.perf_counter() - started)
    values = [*(f"{s * 1000:.2f}" for s in seconds), str(scored.cache_hits)]
    response.headers.update(dict(zip(COST_HEADERS, values, strict=True)))


def _document_texts(documents: list[str | dict[str, Any]], rank_fields: list[str] | None) -> list[str]:
    texts = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            texts.append(doc)
            continue
        if rank_fields:
            missing = [f for f in rank_fields if f not in doc]
            if missing:
                raise _invalid_field(("documents", i), f"has no field {missing[0]!r} named in rank_fields")
            texts.append("\n".join(f"{f}: {doc[f]}" for f in rank_fields))
        elif isinstance(doc.get("text"), str):
            texts.append(doc["text"])
        else:
            raise _invalid_field(("documents", i), "an object document needs a string 'text' field (or rank_fields)")
    return texts


def _returned_document(documents: list[str | dict[str, Any]] | None, texts: list[str], i: int) -> Any:
    original = documents[i] if documents is not None else texts[i]
    return original if isinstance(original, dict) else DocumentText(text=texts[i])


def _invalid_field(loc: tuple, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": message, "type": "value_error"}])


def build_router(settings: Settings, registry: ModelRegistry, metrics: Metrics, draining: asyncio.Event) -> APIRouter:
    router = APIRouter()

    async def not_draining() -> None:  # API keys were checked before the body was read (server/auth.py)
        if draining.is_set():
            raise RerankdError(ErrorKind.TIMEOUT, "the server is shutting down; retry on another replica")

    def check_query(query: str, documents: int) -> None:
        if not query.strip():
            raise RerankdError(ErrorKind.INVALID_INPUT, "query is empty; give the text to rank the documents for")
        if documents > settings.max_documents:
            raise RerankdError(
                ErrorKind.INPUT_TOO_LARGE,
                f"{documents} documents is more than the limit of {settings.max_documents} per request "
                "(--max-documents); split the request",
            )

    @router.post(
        "/rerank",
        response_model=RerankResponse | list[TEIRank],
        response_model_exclude_none=True,
        responses={**_ERRORS, "4XX": {"model": TEIErrorResponse, "description": "TEI requests get TEI errors"}},
        dependencies=[Depends(not_draining)],
        summary="Rerank documents (Cohere v1/v2, Jina, vLLM; TEI with `texts`)",
    )
    @router.post("/v1/rerank", include_in_schema=False, response_model=RerankResponse | list[TEIRank],
                 response_model_exclude_none=True, dependencies=[Depends(not_draining)])
    @router.post("/v2/rerank", include_in_schema=False, response_model=RerankResponse | list[TEIRank],
                 response_model_exclude_none=True, dependencies=[Depends(not_draining)])
    async def rerank(body: RerankRequest, request: Request, response: Response) -> Any:
        """Score each document against the query and return them best first.

        `/rerank`, `/v1/rerank` and `/v2/rerank` are the same handler. A body with
        `texts` instead of `documents` is answered in TEI's shape: a bare array
        `[{index, score, text?}]`, and TEI's `{error, error_type}` on errors.
        """
        started = time.perf_counter()
        tei = body.texts is not None
        if tei:
            request.state.dialect = "tei"
        served = registry.get(body.model)
        texts = body.texts if tei else _document_texts(body.documents or [], body.rank_fields)
        check_query(body.query, len(texts))
        lengths = resolve_lengths(body, settings, tei_truncate=body.truncate if tei else None,
                                  keep_end=body.truncation_direction.lower() == "left")
        scored = await _until_done(
            request, served.score(body.query, texts, **lengths.as_kwargs(), instruction=body.instruction),
            settings.request_timeout,
        )
        _timing_headers(response, scored, started)
        request.state.log_fields = {
            "model": served.name, "documents": len(texts), "tokens": scored.total_tokens,
            "truncated": sum(scored.truncated), "cache_hits": scored.cache_hits, "tokenize_ms": round(scored.tokenize_seconds * 1000, 2),
            "queue_ms": round(scored.queue_seconds * 1000, 2), "inference_ms": round(scored.inference_seconds * 1000, 2),
        }
        calibration = registry.calibrations[served.name]
        scores = calibration.relevance(scored.logits)
        # Ranked on the logits: a calibration keeps their order, but may squeeze scores into ties.
        ranked = rank_order(scored.logits.tolist(), body.top_n)
        min_score = settings.min_score if body.min_score is None else body.min_score
        order = above_min_score(ranked, scores, min_score)
        if min_score is not None:
            response.headers["x-below-min-score"] = str(len(ranked) - len(order))
        if tei:
            values = scored.logits if body.raw_scores else scores
            return [TEIRank(index=i, score=float(values[i]), text=texts[i] if body.return_text else None,
                            **chunk_info(scored.chunks, i, body.return_chunk_scores, calibration)) for i in order]
        with_documents = body.return_documents is not False
        results = [
            RerankResult(
                index=i,
                relevance_score=float(scores[i]),
                raw_score=float(scored.logits[i]) if body.raw_scores else None,
                truncated=scored.truncated[i],
                document=_returned_document(body.documents, texts, i) if with_documents else None,
                **chunk_info(scored.chunks, i, body.return_chunk_scores, calibration),
            )
            for i in order
        ]
        truncated = [i for i, t in enumerate(scored.truncated) if t]
        cut = (f"had tokens past their {lengths.chunking.max_chunks} windows (or max_tokens_per_doc) left unscored"
               if lengths.truncation == "chunk" else
               f"were truncated to fit {lengths.max_length or served.encoder.max_length} tokens with the query")
        warnings = (
            [f"{len(truncated)} document(s) {cut}: "
             f"indices {', '.join(map(str, truncated[:20]))}{' ...' if len(truncated) > 20 else ''}"]
            if truncated else None
        )
        tokens = scored.total_tokens
        return RerankResponse(
            id=str(uuid.uuid4()),
            model=served.name,
            results=results,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
            meta=Meta(
                api_version=ApiVersion(version=API_VERSION),
                billed_units=BilledUnits(search_units=max(1, math.ceil(len(texts) / 100))),
                tokens=Tokens(input_tokens=tokens),
                warnings=warnings,
                below_min_score=len(ranked) - len(order) if min_score is not None else None,
            ),
        )

    @router.post("/score", response_model=ScoreResponse, response_model_exclude_none=True, responses=_ERRORS,
                 dependencies=[Depends(not_draining)], summary="Score text pairs (vLLM)")
    @router.post("/v1/score", include_in_schema=False, response_model=ScoreResponse, response_model_exclude_none=True,
                 dependencies=[Depends(not_draining)])
    async def score(body: ScoreRequest, request: Request, response: Response) -> ScoreResponse:
        """vLLM's score API: `text_1` against each of `text_2` (1:N), or pair by pair (N:N)."""
        started = time.perf_counter()
        served = registry.get(body.model)
        left = [body.text_1] if isinstance(body.text_1, str) else body.text_1
        right = [body.text_2] if isinstance(body.text_2, str) else body.text_2
        if len(left) == 1:
            left = left * len(right)
        if len(left) != len(right):
            raise RerankdError(
                ErrorKind.INVALID_INPUT,
                f"text_1 has {len(left)} texts and text_2 has {len(right)}; give one text_1, or as many as text_2",
            )
        for query in dict.fromkeys(left):
            check_query(query, len(right))
        scored = await _until_done(
            request,
            served.score(left, right, **resolve_lengths(body, settings).as_kwargs(), instruction=body.instruction),
            settings.request_timeout,
        )
        _timing_headers(response, scored, started)
        # Index-aligned, one score per pair: min_score has nothing to drop here.
        calibration = registry.calibrations[served.name]
        scores = calibration.relevance(scored.logits)
        tokens = scored.total_tokens
        return ScoreResponse(
            id=f"score-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=served.name,
            data=[ScoreData(index=i, score=float(s),
                            **chunk_info(scored.chunks, i, body.return_chunk_scores, calibration))
                  for i, s in enumerate(scores)],
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    @router.get("/health", response_model=Status, response_model_exclude_none=True, responses={503: {"model": Status}},
                summary="Liveness")
    async def health() -> Any:
        """200 while the process serves HTTP, also while the model loads; 503 when a model thread has died
        or has finished no batch for --stall-timeout seconds while work waits, so that it gets restarted."""
        problem = registry.health()
        if problem is None:
            return Status(status="ok")
        return JSONResponse(Status(status="unhealthy", reason=problem).model_dump(), status_code=503)

    @router.get("/ready", response_model=Status, response_model_exclude_none=True, responses={503: {"model": Status}},
                summary="Readiness")
    async def ready() -> Any:
        """200 once every model is loaded and warmed up; 503 while loading, after a failure, or while draining."""
        state = State.DRAINING if draining.is_set() else registry.state
        if state is State.READY:
            return Status(status="ready")
        return JSONResponse({"status": state.value}, status_code=503)

    @router.get("/info", response_model=Info, responses={401: _ERRORS[401]}, summary="Model, limits and version")
    async def info() -> Info:
        """What is served and under which limits. Needs the API key when keys are set: it names model paths
        and the cache's host."""
        models = [
            ServedModelInfo(
                name=name, source=loaded.source, revision=loaded.revision, model_type=loaded.model_type,
                kind=loaded.kind, backend=service.scorer.backend.name, backend_timings=loaded.backend_timings,
                device=str(loaded.device), dtype=loaded.dtype, max_input_length=service.encoder.max_length,
                is_fixture=loaded.fixture is not None, calibration=registry.calibrations[name].source,
            )
            for name, service in registry.models.items()
            for loaded in [registry.loaded[name]]
        ]
        return Info(
            model_id=registry.names[0],
            model_dtype=models[0].dtype if models else None,
            version=__version__,
            max_input_length=models[0].max_input_length if models else settings.lengths()[0],
            max_documents=settings.max_documents,
            max_document_chars=settings.max_document_chars,
            max_batch_tokens=next(iter(registry.models.values())).scorer.max_batch_tokens
            if registry.models else (settings.max_batch_tokens or 0),
            max_batch_size=settings.max_batch_size,
            max_queued_pairs=settings.max_queued_pairs,
            max_concurrent_requests=settings.max_concurrent_requests,
            max_queue_wait=settings.queue_wait_limit,
            request_timeout=settings.request_timeout,
            truncation=settings.truncation,
            chunk_overlap=settings.chunk_overlap,
            chunk_aggregate=settings.chunk_aggregate,
            max_chunks_per_doc=settings.max_chunks_per_doc,
            cache=registry.cache.description if registry.cache is not None else None,
            models=models,
            state=(State.DRAINING if draining.is_set() else registry.state).value,
        )

    @router.get("/v1/models", response_model=ModelList, responses={401: _ERRORS[401]},
                summary="Served models (OpenAI shape)")
    async def list_models() -> ModelList:
        created = int(time.time())
        # A model still loading has no kind yet, and the cross-encoder default length.
        return ModelList(data=[
            ModelCard(id=name, created=created, kind=registry.loaded[name].kind if name in registry.loaded else None,
                      max_model_len=registry.models[name].encoder.max_length if name in registry.models
                      else settings.lengths()[0])
            for name in registry.names
        ])

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        registry.report()
        return Response(metrics.exposition(), media_type=metrics.content_type)

    return router
