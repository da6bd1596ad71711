"""Outermost ASGI layer: body-size limit, request ids, per-route metrics, in-flight count, access lines."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerankd.logs import access_log
from rerankd.server.errors import error_response
from rerankd.server.metrics import Metrics

# Orchestrators poll these every few seconds: in text, only a failing /health or /metrics gets a line.
_QUIET_PROBES = frozenset({"/health", "/ready", "/metrics"})
_PATH_CHARS = 200
# A client's X-Request-Id is kept when it is this; otherwise the request gets a generated one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class InFlight:
    """Requests being served now; SIGTERM waits for `idle` before the server exits."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


class ServingMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        json_logs: bool,
        in_flight: InFlight,
        route_paths: frozenset[str],
        access_lines: bool = True,
    ) -> None:
        self.app = app
        self.route_paths = route_paths
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.json_logs = json_logs
        self.access_lines = access_lines
        self.in_flight = in_flight

    def _route_template(self, scope: Scope) -> str:
        """The route a request was for, also when it was refused before routing (Content-Length over the limit)."""
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        return scope["path"] if scope["path"] in self.route_paths else "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(request_id):  # it is echoed and logged: no control characters, no floods
            request_id = uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        response_started = False
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal status, response_started
            if too_large:  # the app saw a cut-off body; its answer is replaced by the 413 below
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        self.in_flight.enter()
        try:
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                too_large = True
            else:
                await self.app(scope, counting_receive, tagged_send)
            if too_large and not response_started:
                too_large = False
                await error_response(
                    413, f"the request body is over the limit of {self.max_body_bytes} bytes (--max-body-bytes)"
                )(scope, receive, tagged_send)
        finally:
            self.in_flight.leave()
            path = self._route_template(scope)
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(seconds)
            if self.access_lines:
                self._log_access(scope, request_id, path, status, seconds, state.get("log_fields", {}))

    def _log_access(self, scope: Scope, request_id: str, route: str, status: int, seconds: float,
                    fields: dict[str, Any]) -> None:
        if self.json_logs:
            line = {
                "request_id": request_id,
                "pid": os.getpid(),  # which worker process served it, with --workers
                "method": scope["method"],
                "route": route,
                "status": status,
                "total_ms": round(seconds * 1000, 2),
                **fields,
            }
            access_log.info(json.dumps(line, ensure_ascii=False))
            return
        if scope["path"] in _QUIET_PROBES and (status < 500 or scope["path"] == "/ready"):
            return  # a /ready 503 is expected while loading and draining; the status lines say so
        # The path as sent, escaped, so a crafted one can't forge a line of its own.
        path = json.dumps(scope["path"][:_PATH_CHARS], ensure_ascii=False)[1:-1]
        sizes = "".join(f" {name}={fields[key]}" for key, name in
                        (("documents", "docs"), ("tokens", "tokens"), ("cache_hits", "cache_hits")) if key in fields)
        access_log.info("%s %s %d%s total_ms=%.1f", scope["method"], path, status, sizes, seconds * 1000)
