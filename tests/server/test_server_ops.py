"""Operations over real HTTP: probes, /info, /metrics, /docs, headers, API keys, CORS, JSON logs,
the SIGTERM drain and clients that go away."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_harness import (
    DOCS,
    PATIENT,
    QUERY,
    ServerProcess,
    assert_error_body,
    assert_tei_error_body,
    slow_documents,
    wait_until,
)

import rerankd

INFERENCE_ROUTES = ["/rerank", "/v1/rerank", "/v2/rerank", "/score", "/v1/score"]
TIMING_HEADERS = ["x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time"]
# A deadline on events (a log line, a metric, an exit), never a measurement: generous, so a busy machine only
# waits longer.
EVENT_S = 120


def inference_body(path: str) -> dict:
    if "score" in path:
        return {"text_1": QUERY, "text_2": DOCS}
    return {"query": QUERY, "documents": DOCS}


GUARDED_BODY_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def guarded(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    """API keys and CORS from flags; --json-logs at the default log level; a small body limit."""
    return start_module_server(
        [xlmr_dir],
        ["--api-key", "k1", "--api-key", "k2", "--cors-origin", "http://x.example", "--json-logs",
         "--max-body-bytes", str(GUARDED_BODY_LIMIT)],
    )


@pytest.fixture(scope="module")
def guarded_by_env(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    """API keys, JSON logs and the log level from the environment; watched while it loads."""
    server = start_module_server(
        [xlmr_dir],
        env={"RERANKD_API_KEY": "k1,k2", "RERANKD_JSON_LOGS": "1", "RERANKD_LOG_LEVEL": "info"},
        wait=False,
    )
    server.loading_observations = _watch_loading(server)  # type: ignore[attr-defined]
    return server


def _watch_loading(server: ServerProcess) -> list[tuple[int, int, str]]:
    """(health status, ready status, ready body) seen until /ready says 200."""
    seen: list[tuple[int, int, str]] = []
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=server.url, timeout=2) as c:
        while time.monotonic() < deadline:
            assert server.returncode is None, server.logs()
            try:
                health = c.get("/health").status_code
                ready = c.get("/ready")
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            seen.append((health, ready.status_code, ready.json()["status"]))
            if ready.status_code == 200:
                return seen
            time.sleep(0.02)
    raise AssertionError(f"not ready in time:\n{server.logs()}")


# --- probes and /info -----------------------------------------------------------------------------


def test_health_is_200(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_is_200_when_loaded(client: httpx.Client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_health_answers_while_loading_and_ready_waits(guarded_by_env: ServerProcess) -> None:
    seen = guarded_by_env.loading_observations  # type: ignore[attr-defined]
    assert seen[-1] == (200, 200, "ready")
    # Before it was ready, /health said 200 and /ready said 503 "loading" (if the window was caught at all).
    assert all(h == 200 and r == 503 and s == "loading" for h, r, s in seen[:-1]), seen


def test_info_reports_model_type_version_and_limits(client: httpx.Client, xlmr_dir: Path) -> None:
    info = client.get("/info").json()
    assert info["model_type"] == "reranker"
    assert info["version"] == rerankd.__version__
    assert info["model_id"] == str(xlmr_dir)
    assert info["model_dtype"] == "fp32"
    assert info["max_input_length"] == 512
    assert info["max_documents"] == 1000
    assert info["max_document_chars"] == 200_000
    assert info["max_batch_size"] == 128
    assert info["max_batch_tokens"] > 0
    assert info["max_queued_pairs"] == 16384
    assert info["truncation"] == "truncate"
    assert info["state"] == "ready"
    [model] = info["models"]
    assert model["name"] == str(xlmr_dir) and model["is_fixture"] is True and model["device"] == "cpu"


def test_openapi_lists_the_public_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/rerank", "/score", "/health", "/ready", "/info", "/metrics", "/v1/models"} <= set(paths)


# --- /metrics -------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status(default_server: ServerProcess, client: httpx.Client) -> None:
    model = str(default_server.models[0])
    before = default_server.metrics()

    def count(samples: dict, route: str, status: str) -> float:
        return samples.get(("rerankd_requests_total", (("route", route), ("status", status))), 0.0)

    assert client.post("/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    assert client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    assert client.post("/rerank", json={"query": "", "documents": DOCS}).status_code == 400
    assert client.post("/v1/score", json={"text_1": QUERY, "text_2": DOCS}).status_code == 200
    assert client.get("/no-such-route").status_code == 404

    def counted() -> bool:
        after = default_server.metrics()
        return (
            count(after, "/rerank", "200") == count(before, "/rerank", "200") + 1
            and count(after, "/v1/rerank", "200") == count(before, "/v1/rerank", "200") + 1
            and count(after, "/rerank", "400") == count(before, "/rerank", "400") + 1
            and count(after, "/v1/score", "200") == count(before, "/v1/score", "200") + 1
            and count(after, "unmatched", "404") == count(before, "unmatched", "404") + 1
        )

    wait_until(counted, timeout=EVENT_S, message="request counters")
    after = default_server.metrics()
    for name in (
        "rerankd_tokenization_duration_seconds",
        "rerankd_queue_duration_seconds",
        "rerankd_inference_duration_seconds",
        "rerankd_batch_size",
        "rerankd_batch_tokens",
    ):
        key = (f"{name}_count", (("model", model),))
        assert after[key] > before.get(key, 0.0), name
        assert (f"{name}_bucket", (("le", "+Inf"), ("model", model))) in after, name
    assert after[("rerankd_request_duration_seconds_count", (("route", "/rerank"),))] >= 2
    assert after[("rerankd_queue_pairs", (("model", model),))] == 0


def test_metrics_batch_histograms_see_the_pairs(default_server: ServerProcess, client: httpx.Client) -> None:
    model = str(default_server.models[0])
    before = default_server.metrics()
    assert client.post("/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    after = default_server.metrics()
    size = ("rerankd_batch_size_sum", (("model", model),))
    tokens = ("rerankd_batch_tokens_sum", (("model", model),))
    assert after[size] - before.get(size, 0.0) == len(DOCS)
    assert after[tokens] - before.get(tokens, 0.0) >= len(DOCS) * 8


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE rerankd_queue_pairs gauge" in response.text
    assert "# TYPE rerankd_batch_size histogram" in response.text


# --- /docs ----------------------------------------------------------------------------------------


def test_docs_serve_swagger_ui_from_the_server(client: httpx.Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "SwaggerUIBundle" in html
    assert not re.search(r"https?://", html), "the docs page must not load anything from the internet"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    scripts = [a for a in assets if a.endswith(".js")]
    styles = [a for a in assets if a.endswith(".css")]
    assert scripts and styles, assets
    for asset in scripts + styles:
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/"), asset
        fetched = client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 1000, asset
    assert "javascript" in client.get(scripts[0]).headers["content-type"]
    assert "css" in client.get(styles[0]).headers["content-type"]


# --- headers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/rerank", "/score"])
def test_timing_and_request_id_headers(client: httpx.Client, path: str) -> None:
    response = client.post(path, json=inference_body(path))
    assert response.status_code == 200
    values = {name: float(response.headers[name]) for name in TIMING_HEADERS}
    assert all(v >= 0 for v in values.values()), values
    assert values["x-total-time"] >= values["x-inference-time"]
    assert values["x-total-time"] >= values["x-tokenization-time"]
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert all(name in tei.headers for name in TIMING_HEADERS)


def test_request_id_is_echoed_and_on_errors_too(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": DOCS}, headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    first = client.get("/nope").headers["x-request-id"]
    second = client.get("/nope").headers["x-request-id"]
    assert first and second and first != second


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "new\tline", "café", "a/b", "<script>", "a;b=c"])
def test_a_request_id_too_long_or_with_odd_characters_is_replaced(client: httpx.Client, sent: str) -> None:
    response = client.get("/health", headers={"X-Request-Id": sent.encode("utf-8")})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_a_request_id_of_128_safe_characters_is_kept(client: httpx.Client) -> None:
    sent = ("Az09._:-" * 16)[:128]
    assert client.get("/health", headers={"X-Request-Id": sent}).headers["x-request-id"] == sent


# --- API keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_fixture", ["guarded", "guarded_by_env"])
@pytest.mark.parametrize("path", INFERENCE_ROUTES)
def test_api_keys_protect_inference_routes(request: pytest.FixtureRequest, server_fixture: str, path: str) -> None:
    server: ServerProcess = request.getfixturevalue(server_fixture)
    with server.client() as c:
        missing = c.post(path, json=inference_body(path))
        assert "api key" in assert_error_body(missing, 401).lower()
        assert missing.headers["www-authenticate"] == "Bearer"
        for header in ("Bearer k3", "Bearer", "Basic k1", "k1", "Bearer k1k2", "Bearer k1,k2"):
            assert_error_body(c.post(path, json=inference_body(path), headers={"Authorization": header}), 401)
        for key in ("k1", "k2"):
            ok = c.post(path, json=inference_body(path), headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200, ok.text
        ok = c.post(path, json=inference_body(path), headers={"Authorization": "bearer k2"})
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("server_fixture", ["guarded", "guarded_by_env"])
def test_api_keys_leave_probes_metrics_and_the_reference_open(request: pytest.FixtureRequest,
                                                              server_fixture: str) -> None:
    server: ServerProcess = request.getfixturevalue(server_fixture)
    with server.client() as c:
        for path in ("/health", "/ready", "/metrics", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 200, path


@pytest.mark.parametrize("path", ["/info", "/v1/models"])
def test_api_keys_guard_info_and_the_model_list(guarded: ServerProcess, path: str) -> None:
    """They name model paths and the cache's host."""
    with guarded.client() as c:
        assert "api key" in assert_error_body(c.get(path), 401).lower()
        assert c.get(path, headers={"Authorization": "Bearer k2"}).status_code == 200


def test_api_keys_guard_tei_requests_too(guarded: ServerProcess) -> None:
    with guarded.client() as c:
        response = c.post("/rerank", json={"query": QUERY, "texts": DOCS})
        assert "api key" in assert_tei_error_body(response, 401).lower()  # TEI's error shape for TEI clients
        ok = c.post("/rerank", json={"query": QUERY, "texts": DOCS}, headers={"Authorization": "Bearer k1"})
        assert ok.status_code == 200 and isinstance(ok.json(), list)


# --- a flood of refused requests -------------------------------------------------------------------


def test_a_flood_over_the_body_limit_and_without_keys_is_refused_fast_and_loses_nothing(
    guarded: ServerProcess,
) -> None:
    """Bodies over the limit get 413 and keyless ones 401 (TEI's shape for TEI bodies), each fast; requests
    sent in among them get their scores; the server answers afterwards."""
    auth = {"Authorization": "Bearer k1", "content-type": "application/json"}
    over = json.dumps({"query": QUERY, "documents": ["a" * GUARDED_BODY_LIMIT]}).encode()
    near = json.dumps({"query": QUERY, "documents": ["a" * (GUARDED_BODY_LIMIT - 1000)]}).encode()
    tei = json.dumps({"query": QUERY, "texts": ["a" * (GUARDED_BODY_LIMIT // 2)]}).encode()
    valid = {"query": QUERY, "documents": DOCS}
    with guarded.client() as c:
        expected = [r["relevance_score"] for r in c.post("/rerank", json=valid, headers=auth).json()["results"]]
    sends = {  # kind -> (body, headers, status)
        "over": (over, auth, 413),
        "over, no key": (over, {"content-type": "application/json"}, 413),
        "no key": (near, {"content-type": "application/json"}, 401),
        "tei, no key": (tei, {"content-type": "application/json"}, 401),
        "wrong key": (near, {**auth, "Authorization": "Bearer nope"}, 401),
    }
    kinds = [*sends] * 16 + ["valid"] * 16

    async def flood() -> list[tuple[str, httpx.Response, float]]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=guarded.url, timeout=60, limits=limits) as c:
            async def one(kind: str) -> tuple[str, httpx.Response, float]:
                started = time.monotonic()
                if kind == "valid":
                    response = await c.post("/rerank", json=valid, headers=auth)
                else:
                    response = await c.post("/rerank", content=sends[kind][0], headers=sends[kind][1])
                return kind, response, time.monotonic() - started

            return await asyncio.gather(*(one(kind) for kind in kinds[::2] + kinds[1::2]))

    answers = asyncio.run(flood())
    for kind, response, seconds in answers:
        if kind == "valid":
            assert response.status_code == 200, response.text
            assert [r["relevance_score"] for r in response.json()["results"]] == pytest.approx(expected)
            continue
        status = sends[kind][2]
        if kind.startswith("tei"):
            assert_tei_error_body(response, status)
        else:
            assert_error_body(response, status)
        assert seconds < 10, (kind, seconds)  # a generous bound: on an idle machine each takes milliseconds
    assert guarded.returncode is None
    with guarded.client() as c:
        assert c.get("/health").status_code == 200
        assert c.post("/rerank", json=valid, headers=auth).status_code == 200


# --- CORS -----------------------------------------------------------------------------------------


def test_cors_is_off_by_default(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": DOCS}, headers={"Origin": "http://x.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/rerank", headers={"Origin": "http://x.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_origin_flag_allows_that_origin(guarded: ServerProcess) -> None:
    auth = {"Authorization": "Bearer k1"}
    with guarded.client() as c:
        response = c.post(
            "/rerank", json={"query": QUERY, "documents": DOCS}, headers={**auth, "Origin": "http://x.example"}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://x.example"
        exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
        assert {"x-request-id", "x-cache-hits", *TIMING_HEADERS} <= exposed
        denied = c.post("/rerank", json={"query": QUERY, "documents": DOCS}, headers={"Origin": "http://x.example"})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "http://x.example"
        preflight = c.options(
            "/rerank",
            headers={
                "Origin": "http://x.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "http://x.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        other = c.post(
            "/rerank", json={"query": QUERY, "documents": DOCS}, headers={**auth, "Origin": "http://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


# --- JSON logs ------------------------------------------------------------------------------------


def _access_records(server: ServerProcess) -> list[dict]:
    """JSON objects logged by the server, whether the line is bare JSON or behind a log-format prefix."""
    records = []
    for line in server.logs().splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "request_id" in record:
            records.append(record)
    return records


def test_json_logs_carry_request_fields(guarded_by_env: ServerProcess) -> None:
    auth = {"Authorization": "Bearer k2"}
    with guarded_by_env.client() as c:
        ok = c.post("/rerank", json={"query": QUERY, "documents": DOCS}, headers={**auth, "X-Request-Id": "log-ok-1"})
        assert ok.status_code == 200
        denied = c.post("/rerank", json={"query": QUERY, "documents": DOCS}, headers={"X-Request-Id": "log-denied-1"})
        assert denied.status_code == 401

    def logged() -> bool:
        ids = {r["request_id"] for r in _access_records(guarded_by_env)}
        return {"log-ok-1", "log-denied-1"} <= ids

    wait_until(logged, timeout=EVENT_S, message="access log lines")
    records = {r["request_id"]: r for r in _access_records(guarded_by_env)}
    line = records["log-ok-1"]
    assert line["route"] == "/rerank" and line["status"] == 200 and line["method"] == "POST"
    assert line["documents"] == len(DOCS)
    assert line["tokens"] == ok.json()["usage"]["total_tokens"]
    for timing in ("total_ms", "tokenize_ms", "queue_ms", "inference_ms"):
        assert isinstance(line[timing], (int, float)) and line[timing] >= 0, timing
    assert records["log-denied-1"]["status"] == 401


def test_json_logs_make_every_log_line_json(guarded_by_env: ServerProcess) -> None:
    lines = [line for line in guarded_by_env.logs().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # start-up, model loading and uvicorn's lines too
    loading = [r for r in records if r.get("logger", "").startswith("rerankd") and r.get("level") == "INFO"]
    assert loading and {"time", "level", "logger", "pid", "message"} <= set(loading[0])


def test_json_logs_write_one_json_line_per_request(guarded: ServerProcess) -> None:
    with guarded.client() as c:
        response = c.post(
            "/rerank",
            json={"query": QUERY, "documents": DOCS},
            headers={"Authorization": "Bearer k1", "X-Request-Id": "json-line-1"},
        )
        assert response.status_code == 200

    def json_lines() -> list[dict]:
        found = []
        for line in guarded.logs().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("request_id") == "json-line-1":
                found.append(record)
        return found

    wait_until(lambda: bool(json_lines()), timeout=EVENT_S, message="a JSON log line for the request")
    [record] = json_lines()
    assert record["route"] == "/rerank" and record["status"] == 200 and record["documents"] == len(DOCS)
    assert {"tokens", "total_ms", "tokenize_ms", "queue_ms", "inference_ms"} <= set(record)


# --- SIGTERM drain --------------------------------------------------------------------------------


class Background:
    """One request on a thread; `.response` or `.error` once it is done."""

    def __init__(self, url: str, body: dict, timeout: float) -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(url, body, timeout), daemon=True)
        self._thread.start()

    def _run(self, url: str, body: dict, timeout: float) -> None:
        try:
            self.response = httpx.post(url, json=body, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the background request did not finish"

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def test_sigterm_drains_in_flight_requests(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # The slow request takes a few seconds alone; a drain deadline this long only bounds a busy machine's wait.
    drain_timeout = EVENT_S
    server: ServerProcess = start_server([xlmr_dir], ["--drain-timeout", str(drain_timeout)])
    slow = Background(
        server.url + "/rerank",
        {"query": QUERY, "documents": slow_documents(1000), "return_documents": False},
        timeout=drain_timeout + EVENT_S,
    )
    wait_until(lambda: slow.done or server.queue_pairs() > 0, timeout=EVENT_S, message="the slow request in the model")
    assert not slow.done, "the slow request finished before SIGTERM; make it slower"

    server.signal(signal.SIGTERM)
    signalled = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        ready = c.get("/ready")
        refused = c.post("/rerank", json={"query": QUERY, "documents": DOCS})
        health = c.get("/health")
    assert not slow.done, "the slow request finished during the probes; make it slower"
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert "shutting down" in assert_error_body(refused, 503)
    assert health.status_code == 200

    slow.join(timeout=drain_timeout + EVENT_S)
    assert slow.error is None, repr(slow.error)
    assert slow.response is not None and slow.response.status_code == 200, slow.response and slow.response.text
    assert len(slow.response.json()["results"]) == 1000

    returncode = server.wait(timeout=drain_timeout + EVENT_S)
    exited = time.monotonic()
    assert exited - signalled < drain_timeout
    # 0 is the goal; -SIGTERM is uvicorn re-raising the signal (see test_sigterm_exit_status_is_zero).
    assert returncode in (0, -signal.SIGTERM), server.logs()
    assert "draining" in server.logs()


@pytest.fixture(scope="module")
def drain_deadline_run(start_module_server, xlmr_dir: Path) -> dict:  # type: ignore[no-untyped-def]
    """Two big requests (about 4 s of model time) on a server with --drain-timeout 1, then SIGTERM."""
    # Admission lets both in however slow this machine is.
    server: ServerProcess = start_module_server([xlmr_dir], ["--drain-timeout", "1", *PATIENT])
    body = {"query": QUERY, "documents": slow_documents(1000), "return_documents": False}
    slow = [Background(server.url + "/rerank", body, timeout=120)]
    wait_until(lambda: server.queue_pairs() > 0, timeout=EVENT_S, message="the first slow request in the model")
    slow.append(Background(server.url + "/rerank", {**body, "query": "other"}, timeout=120))
    wait_until(lambda: server.queue_requests() == 2, timeout=EVENT_S, message="both slow requests in the model")
    server.signal(signal.SIGTERM)
    signalled = time.monotonic()
    server.wait(timeout=EVENT_S)
    exited = time.monotonic()
    for request in slow:
        request.join(timeout=EVENT_S)
    return {"server": server, "requests": slow, "seconds": exited - signalled}


def test_sigterm_drain_deadline_stops_a_stuck_server(drain_deadline_run: dict) -> None:
    # The drain deadline (1 s), uvicorn's graceful shutdown (1 s), the model thread's stop (at most 5 s), slack.
    assert drain_deadline_run["seconds"] < 15, "the server outlived its drain deadline"
    requests: list[Background] = drain_deadline_run["requests"]
    assert not all(r.response is not None and r.response.status_code == 200 for r in requests), (
        "both requests finished: the deadline was not tested"
    )
    assert "drain deadline of 1 s passed" in drain_deadline_run["server"].logs()


def test_requests_cut_off_by_the_drain_deadline_get_a_json_503(drain_deadline_run: dict) -> None:
    requests: list[Background] = drain_deadline_run["requests"]
    cut = [r for r in requests if r.response is None or r.response.status_code != 200]
    assert cut
    for request in cut:
        assert request.response is not None, repr(request.error)
        assert_error_body(request.response, 503)
        assert "retry-after" in request.response.headers


def test_sigterm_exit_status_is_zero(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server([xlmr_dir])
    with server.client() as c:
        assert c.post("/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=EVENT_S) == 0


# --- clients that go away -------------------------------------------------------------------------


class RawRequest:
    """A POST sent over a plain socket, so the test decides exactly when the client goes away."""

    def __init__(self, server: ServerProcess, path: str, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + payload)

    def hang_up(self) -> None:
        self.sock.close()


def _scored_pairs(server: ServerProcess) -> float:
    """Pairs the model has run so far (the batch-size histogram's sum)."""
    return sum(v for (name, _), v in server.metrics().items() if name == "rerankd_batch_size_sum")


@pytest.fixture(scope="module")
def patient_server(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    """Default settings, except that admission lets several big requests queue however slow this machine is."""
    return start_module_server([xlmr_dir], PATIENT)


def test_client_gone_while_queued_does_not_break_the_server(patient_server: ServerProcess) -> None:
    url = patient_server.url + "/rerank"
    scored_before = _scored_pairs(patient_server)
    running = Background(url, {"query": QUERY, "documents": slow_documents(1000), "return_documents": False}, 120)
    wait_until(lambda: running.done or patient_server.queue_pairs() > 0, timeout=EVENT_S, message="the first request")
    # The second request shares the model with the first; its client hangs up while it is still queued.
    queued = RawRequest(patient_server, "/rerank", {"query": "another query", "documents": slow_documents(900)})
    wait_until(lambda: running.done or patient_server.queue_requests() == 2, timeout=EVENT_S,
               message="both queued")
    assert not running.done, "the first request finished before the second one queued: make it slower"
    queued.hang_up()
    running.join(timeout=120)
    assert running.response is not None and running.response.status_code == 200
    wait_until(lambda: patient_server.queue_pairs() == 0, timeout=EVENT_S, message="queue gauge back to 0")
    # What was left of the abandoned request's 900 pairs was dropped, not scored.
    assert _scored_pairs(patient_server) - scored_before < 1900
    response = httpx.post(url, json={"query": QUERY, "documents": DOCS}, timeout=30)
    assert response.status_code == 200
    assert patient_server.queue_pairs() == 0


def test_client_gone_while_scoring_does_not_break_the_server(default_server: ServerProcess) -> None:
    scored_before = _scored_pairs(default_server)
    request = RawRequest(default_server, "/rerank", {"query": QUERY, "documents": slow_documents(1000)})
    wait_until(lambda: default_server.queue_pairs() > 0, timeout=EVENT_S, message="the request in the model")
    request.hang_up()
    wait_until(lambda: default_server.queue_pairs() == 0, timeout=EVENT_S, message="queue gauge back to 0")
    # The model stopped on the abandoned request rather than scoring all of it.
    assert _scored_pairs(default_server) - scored_before < 1000
    response = httpx.post(default_server.url + "/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
    assert response.status_code == 200
    assert default_server.returncode is None


def test_client_timeout_does_not_break_the_server(default_server: ServerProcess) -> None:
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            default_server.url + "/rerank",
            json={"query": QUERY, "documents": slow_documents(500), "return_documents": False},
            timeout=0.2,
        )
    response = httpx.post(default_server.url + "/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
    assert response.status_code == 200
    wait_until(lambda: default_server.queue_pairs() == 0, timeout=EVENT_S, message="queue gauge back to 0")
