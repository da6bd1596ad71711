"""Send one request and record its `Outcome`; the HTTP client the loops share.

httpx is imported lazily (here and in `prometheus`), so the pure parts,
schedules and summaries, work without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rerankd.bench.bodies import RequestBody
from rerankd.bench.outcome import Outcome

if TYPE_CHECKING:
    import httpx

JSON_HEADERS = {"content-type": "application/json"}
ERROR_CHARS = 300
# Idle connections kept by a client with no connection limit. Small on purpose: httpcore (1.0) scans every
# connection once per idle connection each time a request starts or ends, so hundreds of open connections with
# many idle made the pool itself cost seconds of CPU per second at ~40 requests/s, and the open loop fell 20 s
# behind its schedule. Past this many connections, idle ones are closed and each new request opens its own.
UNLIMITED_KEEPALIVE = 32
# Seconds an idle connection is kept: well below uvicorn's default keep-alive timeout (5 s, httpx's default too), so
# the client never sends on a connection the server is closing, a transport error that would be the client's doing.
KEEPALIVE_EXPIRY_S = 2.0


def make_client(timeout: float, connections: int | None, keepalive: int | None = None,
                headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for load.

    Args:
        timeout: Seconds for each of connect, write, read and pool waits; a request that takes longer is recorded
            as a `ReadTimeout`.
        connections: Most open connections; None for no limit, so an open loop never queues inside the client.
        keepalive: Idle connections kept for reuse (default: `connections`, or `UNLIMITED_KEEPALIVE` without a
            limit).
        headers: Headers sent with every request, e.g. `{"Authorization": "Bearer KEY"}`.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with make_client(timeout=5.0, connections=None) as client:
        ...         return client.timeout.read
        >>> asyncio.run(main())
        5.0
    """
    import httpx

    if keepalive is None:
        keepalive = connections if connections is not None else UNLIMITED_KEEPALIVE
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=keepalive,
                          keepalive_expiry=KEEPALIVE_EXPIRY_S)
    return httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers)


async def post(client: httpx.AsyncClient, url: str, body: RequestBody, *, index: int, phase_start: float,
               scheduled: float | None = None, client_id: int | None = None) -> Outcome:
    """POST `body` to `url` and record what happened; never raises for a failed request.

    The send time is taken when httpcore starts writing the request headers (its `trace` extension), after any
    connection set-up, so a client that is slow to send shows up as lag, not as server latency.

    Args:
        client: The shared client (see `make_client`).
        url: Full URL, e.g. `http://127.0.0.1:8000/v1/rerank`.
        body: The encoded body.
        index: The outcome's index in its phase.
        phase_start: `time.perf_counter()` at the phase's start; every time recorded is relative to it.
        scheduled: When the request was due (phase clock); default: now.
        client_id: The closed-loop client sending it.

    Returns:
        The request's `Outcome`.

    Example:
        >>> async def one(client, start):  # doctest: +SKIP
        ...     return await post(client, "http://127.0.0.1:8000/v1/rerank", rerank_body("q", ["a"]),
        ...                       index=0, phase_start=start)
    """
    dispatched = time.perf_counter()
    on_wire: list[float] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        # "http11.send_request_headers.started" (or http2.*): the request's first byte is about to be written.
        if not on_wire and event.endswith("send_request_headers.started"):
            on_wire.append(time.perf_counter())

    outcome = Outcome(index=index, pairs=body.pairs,
                      scheduled=dispatched - phase_start if scheduled is None else scheduled,
                      sent=dispatched - phase_start, client=client_id)
    try:
        response = await client.post(url, content=body.content, headers=JSON_HEADERS, extensions={"trace": trace})
    except Exception as exc:  # noqa: BLE001 - every failure is an outcome to count
        done = time.perf_counter()
        sent = on_wire[0] if on_wire else dispatched
        outcome.sent = sent - phase_start
        outcome.latency = done - sent
        outcome.exception = type(exc).__name__
        outcome.error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        return outcome
    done = time.perf_counter()
    sent = on_wire[0] if on_wire else dispatched
    outcome.sent = sent - phase_start
    outcome.latency = done - sent
    record_answer(outcome, response.status_code, response.headers.get("retry-after"), response.content)
    return outcome


def record_answer(outcome: Outcome, status: int, retry_after: str | None, content: bytes) -> None:
    """Fill an outcome's answer fields from a status, a `Retry-After` value and the body bytes.

    Example:
        >>> o = Outcome(index=0, pairs=1, scheduled=0.0, sent=0.0)
        >>> record_answer(o, 429, "3", b'{"message": "busy", "error": {"message": "busy"}}')
        >>> o.status, o.retry_after, o.error
        (429, '3', 'busy')
    """
    outcome.status = status
    outcome.retry_after = retry_after
    try:
        data = json.loads(content) if content else None
    except ValueError:
        data = None
    if status != 200:
        outcome.error = _error_message(data) or content[:ERROR_CHARS].decode("utf-8", "replace")
        return
    if isinstance(data, list):  # TEI's answer: a bare list of results, no usage
        outcome.results = len(data)
        return
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        outcome.error = f"200 without a results list: {content[:ERROR_CHARS].decode('utf-8', 'replace')}"
        return
    outcome.results = len(data["results"])
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        outcome.tokens = usage["total_tokens"]


def _error_message(data: Any) -> str | None:
    # rerankd's shape is {message, detail, error: {message, type, code}}; TEI's is {error, error_type}.
    if not isinstance(data, dict):
        return None
    for candidate in (data.get("message"), data.get("error"), data.get("detail")):
        if isinstance(candidate, dict):
            candidate = candidate.get("message")
        if isinstance(candidate, str) and candidate:
            return candidate[:ERROR_CHARS]
    return None
