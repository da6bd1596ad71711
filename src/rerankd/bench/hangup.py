"""Hang-ups: clients that send a request and close the connection before the answer.

A raw socket, not httpx: what the server must notice is a real TCP close (FIN)
on a connection whose request it is still working on, and a raw socket makes
that close exactly when asked, with nothing pooled or retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from rerankd.bench.bodies import BodyLike, RequestBody, as_body
from rerankd.bench.client import record_answer
from rerankd.bench.outcome import Outcome, PhaseResult


async def hang_ups(url: str, bodies: Sequence[BodyLike], after: float, *, connect_timeout: float = 30.0) -> PhaseResult:
    """Send every body at once, each on its own connection, and close each connection `after` seconds later.

    An answer that arrives before the hang-up is read and recorded (status, `Retry-After`, ...), so a server that
    refuses or answers fast is not mistaken for one that was still working. An outcome with `hung_up` set and
    `status` None is a request the server had not answered when its client left.

    Args:
        url: `http://host:port/path` of the endpoint (plain HTTP/1.1).
        bodies: One request per body, all sent together.
        after: Seconds from each request's send to its client's close.
        connect_timeout: Seconds to wait for each connection.

    Returns:
        The phase: outcomes in body order; `wall_seconds` from the start to the last hang-up.

    Example:
        >>> bodies = [rerank_body(QUERY, next_docs(32)) for _ in range(200)]  # doctest: +SKIP
        >>> phase = asyncio.run(hang_ups("http://127.0.0.1:8000/v1/rerank", bodies, after=1.0))  # doctest: +SKIP
        >>> last_hang_up = max(o.hung_up for o in phase.outcomes)  # doctest: +SKIP
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"hang_ups needs a plain http://host:port/path URL, got {url!r}")
    host, port = parts.hostname, parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    encoded = [as_body(b) for b in bodies]
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(
        _hang_up(i, body, host, port, target, after, connect_timeout, started) for i, body in enumerate(encoded)
    ))
    return PhaseResult(list(outcomes), time.perf_counter() - started, started_at=started)


async def _hang_up(index: int, body: RequestBody, host: str, port: int, target: str, after: float,
                   connect_timeout: float, started: float) -> Outcome:
    scheduled = time.perf_counter() - started
    outcome = Outcome(index=index, pairs=body.pairs, scheduled=scheduled, sent=scheduled)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        outcome.exception = type(exc).__name__
        outcome.error = f"{type(exc).__name__}: {exc}"[:300]
        return outcome
    head = (f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body.content)}\r\n\r\n").encode("latin-1")
    sent = time.perf_counter()
    outcome.sent = sent - started
    received = bytearray()
    try:
        writer.write(head + body.content)
        await writer.drain()
        # Read until the hang-up time: whatever the server says before then is recorded.
        while (remaining := sent + after - time.perf_counter()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except asyncio.TimeoutError:
                break
            if not chunk:  # the server closed first
                break
            received += chunk
            if _complete(received):
                outcome.latency = time.perf_counter() - sent
                break
    except OSError as exc:
        outcome.exception = type(exc).__name__
        outcome.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        writer.close()  # FIN to the server; the answer, if any comes later, is never read
        outcome.hung_up = time.perf_counter() - started
        try:
            await writer.wait_closed()
        except OSError:
            pass
    if received:
        status, retry_after, content = _parse_response(bytes(received))
        if status is not None:
            record_answer(outcome, status, retry_after, content)
    return outcome


def _complete(data: bytearray) -> bool:
    """Whether `data` holds a whole HTTP/1.1 response with a Content-Length."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    for line in bytes(data[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(data) - head_end - 4 >= int(value.strip())
    return False


def _parse_response(data: bytes) -> tuple[int | None, str | None, bytes]:
    head, _, content = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None, None, b""
    retry_after = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "retry-after":
            retry_after = value.strip()
    return status, retry_after, content
