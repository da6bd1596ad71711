"""The one place where rerankd's errors become HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rerankd.errors import ErrorKind, RerankdError

log = logging.getLogger(__name__)

STATUS = {
    ErrorKind.INVALID_INPUT: 400,
    ErrorKind.UNSUPPORTED: 400,
    ErrorKind.MODEL_NOT_FOUND: 404,
    ErrorKind.INPUT_TOO_LARGE: 413,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.TIMEOUT: 503,
    ErrorKind.MODEL_LOAD: 500,
    ErrorKind.INFERENCE: 500,
}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
}
_TEI_TYPES = {413: "Validation", 422: "Validation", 400: "Validation", 404: "Validation", 429: "Overloaded",
              503: "Unhealthy", 401: "Validation"}
# For a 503 (not ready, draining, timed out): another replica, or this one shortly, may answer.
RETRY_AFTER_SECONDS = 1


def error_response(status: int, message: str, tei: bool = False, retry_after: int | None = None) -> JSONResponse:
    """A JSON error that Cohere, Jina and vLLM clients can all read, or TEI's shape for TEI requests.

    A 429 carries the Retry-After that admission computed from the queue; a 503 a constant one.
    """
    if tei:
        body: dict = {"error": message, "error_type": _TEI_TYPES.get(status, "Backend")}
    else:
        error = {"message": message, "type": _TYPES.get(status, "error"), "code": status}
        body = {"message": message, "detail": message, "error": error}
    if retry_after is None and status in (429, 503):
        retry_after = RETRY_AFTER_SECONDS
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


def is_tei(request: Request) -> bool:
    return getattr(request.state, "dialect", None) == "tei"


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RerankdError)
    async def _rerankd_error(request: Request, exc: RerankdError) -> JSONResponse:
        status = STATUS[exc.kind]
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(status, exc.message, is_tei(request), exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            message = err.get("msg", "invalid")
            if err.get("type") == "json_invalid":
                problems.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', message)})")
            else:
                problems.append(f"{_field(tuple(err.get('loc', ())))}: {message}")
        body = exc.body if isinstance(exc.body, dict) else {}
        return error_response(422, "invalid request: " + "; ".join(problems), tei="texts" in body)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail), is_tei(request))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {exc.__class__.__name__}", is_tei(request))
