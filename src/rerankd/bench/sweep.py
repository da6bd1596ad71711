"""A sweep of load levels against one endpoint, as `rerankd bench` runs it: closed loops at each concurrency,
or open loops at each Poisson arrival rate, every level bounded by a request count and/or a duration.

Traffic goes to the one endpoint given, nothing else: no health probe, no metrics scrape.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from rerankd.bench.bodies import RequestBody
from rerankd.bench.client import make_client, post
from rerankd.bench.closed_loop import timed_closed_loop
from rerankd.bench.open_loop import open_loop
from rerankd.bench.outcome import Outcome, PhaseResult
from rerankd.bench.schedule import poisson_schedule
from rerankd.bench.summary import summarize
from rerankd.errors import ErrorKind, RerankdError

# Where each dialect's rerank endpoint is, on rerankd and on the servers it imitates.
API_PATHS = {"cohere": "/v2/rerank", "jina": "/v1/rerank", "vllm": "/v1/rerank", "tei": "/rerank"}
APIS = tuple(API_PATHS)


def endpoint(url: str, api: str) -> str:
    """The URL to send to: `url` as given when it has a path, else the server's address plus the API's path.

    Example:
        >>> endpoint("http://127.0.0.1:8080", "tei"), endpoint("http://gw/rerankd/v1/rerank", "cohere")
        ('http://127.0.0.1:8080/rerank', 'http://gw/rerankd/v1/rerank')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RerankdError(ErrorKind.INVALID_INPUT, f"--url must be an http:// or https:// URL, got {url!r}")
    return url if parts.path not in ("", "/") else url.rstrip("/") + API_PATHS[api]


def request_body(api: str, query: str, documents: list[str], model: str | None = None) -> RequestBody:
    """One rerank request in the API's shape, asking for no document text back (smaller answers).

    Example:
        >>> request_body("tei", "q", ["a", "b"]).content
        b'{"query": "q", "texts": ["a", "b"], "return_text": false}'
    """
    if api == "tei":
        payload: dict[str, Any] = {"query": query, "texts": documents, "return_text": False}
    else:
        payload = {"query": query, "documents": documents, "return_documents": False}
    if model is not None:
        payload["model"] = model
    return RequestBody.from_json(payload)


@dataclass
class Sweep:
    """What `rerankd bench` runs.

    Attributes:
        url: The endpoint (see `endpoint`).
        api: One of `APIS`: the body's shape.
        requests: (query, documents) of each request, in order; endless or long enough for every level.
        concurrency: Closed-loop clients of each level; empty when `rates` is given.
        rates: Poisson arrivals per second of each level (open loop).
        duration: Seconds each level sends new requests; None for no time bound.
        count: Requests per level; None for no count bound. One of `duration` and `count` is set.
        model: The `model` field of each body, if any.
        headers: Sent with every request (the API key).
        seed: Seed of the arrival times.
        timeout: Seconds one request may take before it counts as a `ReadTimeout`.
    """

    url: str
    api: str
    requests: Iterator[tuple[str, list[str]]]
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    duration: float | None = None
    count: int | None = None
    model: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0
    timeout: float = 120.0

    def __post_init__(self) -> None:
        if bool(self.concurrency) == bool(self.rates):
            raise RerankdError(ErrorKind.INVALID_INPUT, "give concurrency levels or arrival rates, not both")
        if self.duration is None and self.count is None:
            raise RerankdError(ErrorKind.INVALID_INPUT, "a level needs a bound: a duration, a request count or both")
        if any(c < 1 for c in self.concurrency) or any(not r > 0 for r in self.rates):
            raise RerankdError(ErrorKind.INVALID_INPUT, "concurrency levels must be >= 1 and rates > 0")

    @property
    def mode(self) -> str:
        return "concurrency" if self.concurrency else "rate"

    @property
    def levels(self) -> tuple[float, ...]:
        return self.concurrency or self.rates

    def bodies(self) -> Iterator[RequestBody]:
        return (request_body(self.api, q, d, self.model) for q, d in self.requests)


async def check_endpoint(sweep: Sweep) -> None:
    """One request before the clock starts: a server that can't answer 200 stops the run with its reason.

    It also warms the path (connection, the server's first request). Not counted.
    """
    async with make_client(sweep.timeout, connections=1, headers=sweep.headers) as http:
        outcome = await post(http, sweep.url, next(sweep.bodies()), index=0, phase_start=0.0)
    if outcome.ok:
        return
    hint = " (pass --api-key)" if outcome.status == 401 else " (is --api right?)" if outcome.status == 404 else ""
    answer = f"answered {outcome.status}" if outcome.status is not None else "could not be reached"
    raise RerankdError(ErrorKind.INVALID_INPUT, f"{sweep.url} {answer}{hint}: {outcome.error}")


async def run_level(sweep: Sweep, level: float, on_outcome: Callable[[Outcome], None] | None = None) -> PhaseResult:
    """One level of the sweep: `level` clients in a closed loop, or `level` arrivals per second."""
    bodies: Iterable[RequestBody] = sweep.bodies()
    if sweep.count is not None:
        bodies = itertools.islice(bodies, sweep.count)
    duration = math.inf if sweep.duration is None else sweep.duration
    if sweep.mode == "concurrency":
        shared = iter(bodies)  # every client takes the next body from one stream
        return await timed_closed_loop(sweep.url, [shared] * int(level), duration, timeout=sweep.timeout,
                                       headers=sweep.headers, on_outcome=on_outcome)
    schedule = poisson_schedule(level, duration, seed=sweep.seed, count=sweep.count)
    return await open_loop(sweep.url, schedule, list(itertools.islice(bodies, len(schedule))),
                           timeout=sweep.timeout, duration=sweep.duration, headers=sweep.headers,
                           on_outcome=on_outcome)


def level_record(sweep: Sweep, level: float, phase: PhaseResult) -> dict[str, Any]:
    """The JSON record of one level: the level, and the figures of `summarize` over its wall time."""
    return {sweep.mode: level, "wall_seconds": round(phase.wall_seconds, 6),
            "summary": summarize(phase.outcomes, max(phase.wall_seconds, 1e-9))}


def run_sweep(sweep: Sweep, progress: Callable[[float], Callable[[Outcome], None] | None] = lambda level: None
              ) -> list[dict[str, Any]]:
    """Check the endpoint, then run every level in turn; one `level_record` each.

    `progress(level)` gives the callback that sees each outcome of that level (a progress bar).
    """
    asyncio.run(check_endpoint(sweep))
    return [level_record(sweep, level, asyncio.run(run_level(sweep, level, progress(level))))
            for level in sweep.levels]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def errors_by_kind(summary: dict[str, Any]) -> str:
    """Failed requests by HTTP status or transport error, e.g. `429 x3, ReadTimeout x1`; `-` when none."""
    failed = [f"{status} x{n}" for status, n in summary["by_status"].items() if status != "200"]
    failed += [f"{name} x{n}" for name, n in summary["transport_errors"].items()]
    return ", ".join(failed) or "-"


def format_table(mode: str, records: list[dict[str, Any]]) -> str:
    """A plain-text table, one row per level: throughput, latency percentiles of the 200s, and errors."""
    header = [mode, "requests", "ok", "pairs/s", "req/s", "tokens/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    rows = [header]
    for record in records:
        s = record["summary"]
        latency = s["latency_ok_s"]
        tokens = s["ok_tokens"] / s["duration_s"] if s["ok_tokens"] else None
        rows.append([f"{record[mode]:g}", str(s["requests"]), str(s["ok"]), f"{s['goodput_pairs_per_s']:.1f}",
                     f"{s['goodput_requests_per_s']:.2f}", "-" if tokens is None else f"{tokens:.0f}",
                     _ms(latency["p50"]), _ms(latency["p95"]), _ms(latency["p99"]), errors_by_kind(s)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i < len(header) - 1 else cell for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip() for row in rows)
