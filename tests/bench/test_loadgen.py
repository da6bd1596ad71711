"""rerankd.bench: schedules, summaries and metric parsing on synthetic data; the loops against a stub HTTP server.

The stub is a few lines of asyncio (no model, no framework): it answers rerank
bodies with one result per document, refuses every n-th with 429 and a
Retry-After, and notices clients that close before their answer.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import importlib
import json
import math
import pkgutil
import sys
from pathlib import Path

import pytest

import rerankd.bench as bench
from rerankd.bench import (
    Outcome,
    PhaseResult,
    closed_loop,
    hang_ups,
    metric_sum,
    metric_sums,
    open_loop,
    percentile,
    poisson_schedule,
    rerank_body,
    summarize,
    timed_closed_loop,
    wait_for_metric,
)

BENCH_DIR = Path(bench.__file__).parent
# A deadline on events, never a measurement: generous, so a busy machine only waits longer.
EVENT_S = 120


# --------------------------------------------------------------------------- a stub server

class StubServer:
    """HTTP/1.1 with keep-alive on 127.0.0.1: POST -> rerank-shaped JSON, GET /metrics -> one gauge."""

    def __init__(self, refuse_every: int = 0, delay: float = 0.0) -> None:
        self.refuse_every = refuse_every
        self.delay = delay
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self.disconnects = 0
        self.server: asyncio.base_events.Server | None = None
        self.handlers: set[asyncio.Task] = set()

    async def __aenter__(self) -> StubServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        # Let every connection handler end on its own (its client is gone), so none is left to be cancelled.
        await asyncio.wait_for(asyncio.gather(*self.handlers, return_exceptions=True), 10)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if request_line.startswith("GET /metrics"):
                    self._answer(writer, 200, b'# TYPE rerankd_queue_pairs gauge\nrerankd_queue_pairs{model="m"} 0.0\n')
                    await writer.drain()
                    continue
                self.requests += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                try:
                    if self.delay and await self._client_left(reader):
                        self.disconnects += 1
                        return
                    if self.refuse_every and self.requests % self.refuse_every == 0:
                        payload = {"message": "queue full", "error": {"message": "queue full", "type": "x", "code": 429}}
                        self._answer(writer, 429, json.dumps(payload).encode(), {"Retry-After": "2"})
                    else:
                        docs = json.loads(body)["documents"]
                        results = [{"index": i, "relevance_score": 0.5} for i in range(len(docs))]
                        payload = {"results": results, "usage": {"total_tokens": 10 * len(docs)}}
                        self._answer(writer, 200, json.dumps(payload).encode())
                    await writer.drain()
                finally:
                    self.active -= 1
        finally:
            writer.close()

    async def _client_left(self, reader: asyncio.StreamReader) -> bool:
        """Work for `delay` seconds, unless the client closes its connection first (EOF)."""
        try:
            return await asyncio.wait_for(reader.read(1), self.delay) == b""
        except asyncio.TimeoutError:
            return False

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, status: int, content: bytes, extra: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {len(content)}"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content)


def _docs(n: int, tag: object) -> list[str]:
    return [f"document {tag}-{i}" for i in range(n)]


async def _until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --------------------------------------------------------------------------- pure parts

def test_poisson_schedule_is_reproducible_for_a_seed():
    assert poisson_schedule(5.0, 100, seed=3) == poisson_schedule(5.0, 100, seed=3)
    assert poisson_schedule(5.0, 100, seed=3) != poisson_schedule(5.0, 100, seed=4)


def test_poisson_schedule_has_the_asked_mean_rate_within_its_window():
    rate, duration = 20.0, 500.0
    times = poisson_schedule(rate, duration, seed=0)
    # 10,000 expected arrivals, standard deviation 100: 4% is 4 standard deviations.
    assert abs(len(times) - rate * duration) < 0.04 * rate * duration
    assert all(0 < t < duration for t in times)
    gaps = [b - a for a, b in zip([0.0, *times], times)]
    assert all(g >= 0 for g in gaps)
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.04)
    # Exponential gaps: the standard deviation equals the mean.
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert std == pytest.approx(mean, rel=0.08)


def test_poisson_schedule_rejects_a_rate_that_is_not_positive():
    with pytest.raises(ValueError):
        poisson_schedule(0, 10)


def test_percentile_interpolates_linearly_between_closest_ranks():
    values = [float(x) for x in range(10, 0, -1)]  # 10 .. 1, unsorted on purpose
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 100) == 10.0
    assert percentile(values, 0) == 1.0
    assert percentile([], 50) is None


def _synthetic_phase() -> list[Outcome]:
    outcomes = [
        Outcome(i, 32, scheduled=float(i), sent=float(i) + 0.001, latency=float(i + 1), status=200, tokens=900,
                results=32)
        for i in range(10)
    ]
    refusals = [("3", 0.01), ("3", 0.02), ("5", 0.03), ("1.5", 0.04), (None, 0.05)]
    outcomes += [
        Outcome(10 + i, 32, scheduled=10.0 + i, sent=10.0 + i, latency=lat, status=429, retry_after=ra,
                error="queue full")
        for i, (ra, lat) in enumerate(refusals)
    ]
    outcomes.append(Outcome(15, 32, 15.0, 15.0, latency=0.2, status=503, error="timed out"))
    outcomes.append(Outcome(16, 32, 16.0, 16.0, latency=30.0, exception="ReadTimeout", error="ReadTimeout: "))
    outcomes.append(Outcome(17, 4, 17.0, 17.0, latency=0.5, status=200, tokens=50, results=3))  # a short answer
    return outcomes


def test_summary_counts_goodput_and_percentiles_on_synthetic_outcomes():
    s = summarize(_synthetic_phase(), duration=20.0)
    assert s["requests"] == 18
    assert s["by_status"] == {"200": 11, "429": 5, "503": 1}
    assert s["transport_errors"] == {"ReadTimeout": 1}
    assert (s["ok"], s["refused"], s["status_503"], s["server_errors"], s["transport_error_count"]) == (11, 5, 1, 1, 1)
    # Goodput counts the pairs asked for by 200 answers: 10 x 32 + 4, over 20 s.
    assert s["ok_pairs"] == 324
    assert s["goodput_pairs_per_s"] == pytest.approx(16.2)
    assert s["goodput_requests_per_s"] == pytest.approx(11 / 20)
    assert s["short_answers"] == 1
    assert s["ok_tokens"] == 9050
    ok = s["latency_ok_s"]  # 0.5 and 1 .. 10
    assert ok["count"] == 11
    assert ok["p50"] == pytest.approx(5.0)
    assert ok["p95"] == pytest.approx(9.5)
    assert ok["p99"] == pytest.approx(9.9)
    assert ok["max"] == 10.0
    refused = s["latency_refused_s"]  # 0.01 .. 0.05
    assert refused["p50"] == pytest.approx(0.03)
    assert refused["p99"] == pytest.approx(0.0496)
    assert refused["max"] == pytest.approx(0.05)
    ra = s["retry_after"]
    assert (ra["refused"], ra["with_header"]) == (5, 4)
    assert ra["fraction"] == pytest.approx(0.8)
    assert ra["integer_fraction"] == pytest.approx(0.6)  # "1.5" is not a whole number of seconds
    assert (ra["min"], ra["max"]) == (3, 5)
    assert s["send_lag_s"]["max"] == pytest.approx(0.001)
    assert s["errors"][0] == {"example": "queue full", "count": 5}
    assert {e["example"] for e in s["errors"][1:]} == {"timed out", "ReadTimeout: "}


def test_summary_of_no_outcomes_has_empty_figures():
    s = summarize([], duration=1.0)
    assert s["requests"] == 0 and s["goodput_pairs_per_s"] == 0
    assert s["latency_ok_s"]["p99"] is None and s["retry_after"]["fraction"] is None


def test_a_phase_round_trips_through_json():
    phase = PhaseResult(_synthetic_phase(), wall_seconds=21.5, duration=20.0, extra={"rate": 1.5})
    back = PhaseResult.from_dict(json.loads(json.dumps(phase.to_dict())))
    assert back.outcomes == phase.outcomes
    assert (back.wall_seconds, back.duration, back.extra) == (21.5, 20.0, {"rate": 1.5})


def test_metric_sum_adds_up_label_sets_and_filters_on_labels():
    text = """# HELP rerankd_requests_total HTTP requests by route and status.
# TYPE rerankd_requests_total counter
rerankd_requests_total{route="/v1/rerank",status="200"} 40.0
rerankd_requests_total{route="/v1/rerank",status="499"} 3.0
rerankd_requests_total{route="/metrics",status="200"} 7.0
rerankd_queue_pairs{model="a \\"quoted\\" name"} 12.0
rerankd_inference_duration_seconds_sum{model="m"} 1.5e+00
rerankd_inference_duration_seconds_count{model="m"} 3.0
untyped_metric 2
"""
    assert metric_sum(text, "rerankd_requests_total") == 50.0
    assert metric_sum(text, "rerankd_requests_total", status="499") == 3.0
    assert metric_sum(text, "rerankd_requests_total", route="/v1/rerank", status="200") == 40.0
    assert metric_sum(text, "rerankd_queue_pairs", model='a "quoted" name') == 12.0
    assert metric_sum(text, "missing") == 0.0
    sums = metric_sums(text)
    assert sums["rerankd_inference_duration_seconds_sum"] / sums["rerankd_inference_duration_seconds_count"] == 0.5
    assert sums["untyped_metric"] == 2.0


def test_bodies_count_their_pairs_whatever_form_they_come_in():
    assert rerank_body("q", _docs(7, "x")).pairs == 7
    assert bench.as_body({"query": "q", "texts": ["a", "b"]}).pairs == 2
    assert bench.as_body(b'{"query": "q", "documents": ["a"]}').pairs == 1
    assert bench.as_body(b"not json").pairs == 0


# --------------------------------------------------------------------------- the loops, against the stub

def test_open_loop_sends_on_schedule_and_records_answers_and_refusals():
    async def run() -> tuple[PhaseResult, StubServer, list[float]]:
        async with StubServer(refuse_every=3) as stub:
            times = poisson_schedule(rate=40.0, duration=1.0, seed=0)
            bodies = [rerank_body("q", _docs(4, i)) for i in range(len(times))]
            phase = await asyncio.wait_for(
                open_loop(stub.url + "/v1/rerank", times, bodies, timeout=10, prime_url=stub.url + "/metrics"), EVENT_S)
            return phase, stub, times

    phase, stub, times = asyncio.run(run())
    assert len(phase.outcomes) == len(times) == stub.requests > 0
    assert [o.scheduled for o in phase.outcomes] == times
    assert all(o.lag > -0.01 for o in phase.outcomes)  # sent at or after its time, never before
    assert all(o.status in (200, 429) for o in phase.outcomes)
    for o in phase.outcomes:
        if o.status == 200:
            assert (o.results, o.tokens, o.retry_after, o.error) == (4, 40, None, None)
        else:
            assert (o.retry_after, o.error, o.results) == ("2", "queue full", None)
    s = summarize(phase.outcomes, phase.wall_seconds)
    assert s["refused"] == stub.requests // 3
    assert s["ok"] + s["refused"] == len(times)
    assert s["retry_after"]["fraction"] == 1.0
    assert s["goodput_pairs_per_s"] == pytest.approx(4 * s["ok"] / phase.wall_seconds)
    assert phase.duration == times[-1]


def test_closed_loop_sends_each_body_once_with_at_most_c_in_flight():
    async def run() -> tuple[PhaseResult, StubServer]:
        async with StubServer(delay=0.02) as stub:
            bodies = [rerank_body("q", _docs(i + 1, i)) for i in range(20)]
            return await asyncio.wait_for(closed_loop(stub.url + "/v1/rerank", bodies, clients=3, timeout=10), EVENT_S), stub

    phase, stub = asyncio.run(run())
    assert stub.requests == 20
    assert stub.max_active <= 3
    assert [o.pairs for o in phase.outcomes] == list(range(1, 21))  # outcome i is body i
    assert [o.results for o in phase.outcomes] == list(range(1, 21))
    assert {o.client for o in phase.outcomes} <= {0, 1, 2}
    assert phase.duration is None


def test_timed_closed_loop_gives_each_client_its_own_bodies_and_stops_sending_at_the_deadline():
    def source(size: int, client: int):  # type: ignore[no-untyped-def]
        n = 0
        while True:
            n += 1
            yield rerank_body("q", _docs(size, f"{client}-{n}"))

    async def run() -> PhaseResult:
        async with StubServer(delay=0.02) as stub:
            sources = [source(1, 0), source(1, 1), source(5, 2)]
            return await asyncio.wait_for(timed_closed_loop(stub.url + "/v1/rerank", sources, 0.4, timeout=10), EVENT_S)

    phase = asyncio.run(run())
    assert phase.duration == 0.4
    for client, size in ((0, 1), (1, 1), (2, 5)):
        mine = [o for o in phase.outcomes if o.client == client]
        assert mine, f"client {client} sent nothing"
        assert all(o.pairs == size and o.status == 200 for o in mine)
    assert all(o.scheduled < 0.4 for o in phase.outcomes)
    assert [o.index for o in phase.outcomes] == list(range(len(phase.outcomes)))


def test_hang_ups_close_the_connection_and_the_server_sees_it():
    async def run() -> tuple[PhaseResult, int]:
        async with StubServer(delay=30.0) as stub:  # answers only after 30 s: every client leaves first
            bodies = [rerank_body("q", _docs(2, i)) for i in range(5)]
            phase = await asyncio.wait_for(hang_ups(stub.url + "/v1/rerank", bodies, after=0.2), EVENT_S)
            await _until(lambda: stub.disconnects == 5, timeout=EVENT_S)
            return phase, stub.disconnects

    phase, disconnects = asyncio.run(run())
    assert disconnects == 5
    for o in phase.outcomes:
        assert o.status is None and o.exception is None
        assert o.hung_up is not None and o.hung_up - o.sent >= 0.2 - 0.01
    assert summarize(phase.outcomes, phase.wall_seconds)["hung_up"] == 5


def test_hang_ups_record_an_answer_that_came_before_the_client_left():
    async def run() -> PhaseResult:
        async with StubServer(refuse_every=1) as stub:  # refuses at once
            return await asyncio.wait_for(hang_ups(stub.url + "/v1/rerank", [rerank_body("q", ["a"])], after=5), EVENT_S)

    (o,) = asyncio.run(run()).outcomes
    assert (o.status, o.retry_after, o.error) == (429, "2", "queue full")
    assert o.latency is not None and o.hung_up is not None


def test_wait_for_metric_returns_once_the_condition_holds():
    async def run():  # type: ignore[no-untyped-def]
        async with StubServer() as stub:
            met = await wait_for_metric(stub.url + "/metrics", "rerankd_queue_pairs", lambda v: v == 0, timeout=EVENT_S)
            missed = await wait_for_metric(stub.url + "/metrics", "rerankd_queue_pairs", lambda v: v > 0,
                                           timeout=1.0, interval=0.05)
            return met, missed

    met, missed = asyncio.run(run())
    assert met.met and met.value == 0.0 and met.polls == 1
    assert not missed.met and missed.polls >= 2


# --------------------------------------------------------------------------- the package itself

def test_bench_imports_only_the_standard_library_httpx_matplotlib_and_itself():
    allowed = set(sys.stdlib_module_names) | {"httpx", "matplotlib", "__future__"}  # matplotlib: --plot only
    for path in sorted(BENCH_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.startswith("rerankd"):
                    assert name.startswith(("rerankd.bench", "rerankd.errors")), f"{path.name} imports {name}"
                else:
                    assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


@pytest.mark.parametrize(
    "module", ["rerankd.bench", *(f"rerankd.bench.{m.name}" for m in pkgutil.iter_modules([str(BENCH_DIR)]))]
)
def test_docstring_examples_run(module: str):
    result = doctest.testmod(importlib.import_module(module), extraglobs=vars(bench), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
