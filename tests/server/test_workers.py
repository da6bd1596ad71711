"""`rerankd serve --workers N` and gunicorn: N processes on one port, each with its own model and batcher."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import httpx
import pytest
from server_harness import DOCS, QUERY, ServerProcess, assert_error_body, slow_documents, wait_until

from rerankd.cli.serve import export_settings, settings_from_env
from rerankd.model.threads import available_cores, model_threads
from rerankd.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GUNICORN_CONF = ROOT / "deploy" / "gunicorn" / "gunicorn.conf.py"
TEI_TEXTS = ["Pandas eat bamboo.", "大熊猫吃竹子。", "Panda Express sells orange chicken."]
# A deadline on events (a log line, a metric), never a measurement: generous, so a busy machine only waits longer.
EVENT_S = 120


@pytest.fixture(scope="module")
def two_workers(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_module_server([xlmr_dir], ["--workers", "2", "--json-logs"])


def request_counts(server: ServerProcess, route: str = "/rerank") -> tuple[float, float]:
    """(requests counted with status 200, request-duration observations) for `route`, over all workers."""
    samples = server.metrics()
    return (
        samples.get(("rerankd_requests_total", (("route", route), ("status", "200"))), 0.0),
        samples.get(("rerankd_request_duration_seconds_count", (("route", route),)), 0.0),
    )


def pids_by_request_id(server: ServerProcess) -> dict[str, int]:
    """The worker pid of each request in the server's JSON access log."""
    found = {}
    for line in server.logs().splitlines():
        start = line.find("{")
        try:
            record = json.loads(line[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "request_id" in record:
            found[record["request_id"]] = record["pid"]
    return found


# --- settings reach the workers ---------------------------------------------------------------------


def test_worker_settings_read_back_from_the_environment_as_given() -> None:
    settings = Settings(
        workers=3, threads=None, api_key=("k1", "k2"), json_logs=True, no_cache=False, drain_timeout=2.5,
        max_batch_tokens=2048, cache_url="redis://localhost:6379/1", truncation="error",
    )
    models = ("m3=/models/a", "/models/b")
    # An inherited variable for a setting whose value is the default None must not reach the workers.
    with mock.patch.dict(os.environ, {"RERANKD_THREADS": "7"}, clear=True):
        export_settings(models, settings)
        assert "RERANKD_THREADS" not in os.environ
        assert os.environ["RERANKD_MODEL"] == "m3=/models/a,/models/b"
        assert settings_from_env() == (models, settings)


def test_each_worker_takes_its_share_of_the_cores() -> None:
    with mock.patch.dict(os.environ, {"RERANKD_WORKERS": "2"}, clear=True):
        _, settings = settings_from_env()
    # engine/setup.py sets torch's (and ONNX Runtime's) threads to this in every worker.
    assert model_threads(settings.threads, settings.workers) == max(1, available_cores() // 2)


# --- N workers over HTTP -----------------------------------------------------------------------------


def test_two_workers_score_like_one(two_workers: ServerProcess, default_server: ServerProcess) -> None:
    cohere = {"query": QUERY, "documents": DOCS, "return_documents": False}
    tei = {"query": QUERY, "texts": TEI_TEXTS, "raw_scores": True}
    with two_workers.client() as many, default_server.client() as one:
        for body in (cohere, tei):
            # Several requests, so both workers are likely to answer some.
            expected = one.post("/rerank", json=body).json()
            for _ in range(4):
                got = httpx.post(two_workers.url + "/rerank", json=body, timeout=30)
                assert got.status_code == 200, got.text
                got = got.json()
                rows = got["results"] if isinstance(got, dict) else got
                want = expected["results"] if isinstance(expected, dict) else expected
                assert [r["index"] for r in rows] == [r["index"] for r in want]
                score = "relevance_score" if isinstance(got, dict) else "score"
                assert [r[score] for r in rows] == pytest.approx([r[score] for r in want], abs=1e-6)
        assert many.get("/ready").json() == {"status": "ready"}


def test_metrics_add_up_requests_served_by_both_workers(two_workers: ServerProcess) -> None:
    before = request_counts(two_workers)
    sent: list[str] = []
    # Each request on a new connection, so the kernel hands it to whichever worker accepts first;
    # keep going until both have served some (far fewer than the bound, in practice).
    while len(set(pids_by_request_id(two_workers).get(i) for i in sent) - {None}) < 2 and len(sent) < 200:
        for _ in range(10):
            request_id = f"spread-{len(sent)}"
            response = httpx.post(two_workers.url + "/rerank", json={"query": QUERY, "documents": DOCS},
                                  headers={"X-Request-Id": request_id}, timeout=30)
            assert response.status_code == 200
            sent.append(request_id)
        wait_until(lambda: set(sent) <= set(pids_by_request_id(two_workers)), timeout=EVENT_S,
                   message="access log lines")
    served_by = {pids_by_request_id(two_workers)[i] for i in sent}
    assert len(served_by) == 2, f"one worker served all {len(sent)} requests"

    wait_until(lambda: request_counts(two_workers) == (before[0] + len(sent), before[1] + len(sent)),
               timeout=EVENT_S, message=f"{len(sent)} more requests counted")
    assert two_workers.queue_pairs() == 0


def test_sigterm_drains_every_worker_and_exits_zero(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # The slow request takes a few seconds alone; a drain deadline this long only bounds a busy machine's wait.
    drain_timeout = EVENT_S
    server: ServerProcess = start_server([xlmr_dir], ["--workers", "2", "--drain-timeout", str(drain_timeout)],
                                         env={"RERANKD_LOG_LEVEL": "info"})
    # /ready answers once one worker is up; a worker still loading when SIGTERM comes exits without a drain.
    wait_until(lambda: server.logs().count("ready: serving") == 2, timeout=EVENT_S, message="both workers ready")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            httpx.post, server.url + "/rerank",
            json={"query": QUERY, "documents": slow_documents(1000), "return_documents": False},
            timeout=drain_timeout + EVENT_S,
        )
        wait_until(lambda: slow.done() or server.queue_pairs() > 0, timeout=EVENT_S,
                   message="the slow request in the model")
        assert not slow.done(), "the slow request finished before SIGTERM; make it slower"

        server.signal(signal.SIGTERM)  # to the supervisor only, as `docker stop` or Kubernetes do
        signalled = time.monotonic()
        wait_until(lambda: server.logs().count("SIGTERM: draining") == 2, timeout=EVENT_S,
                   message="both workers draining")
        # The idle worker stops; the busy one still answers, and refuses new work.
        refused = None
        deadline = time.monotonic() + EVENT_S
        while refused is None and time.monotonic() < deadline:
            try:
                refused = httpx.post(server.url + "/rerank", json={"query": QUERY, "documents": DOCS}, timeout=EVENT_S)
            except httpx.TransportError:  # caught the idle worker closing
                time.sleep(0.05)
        assert not slow.done(), "the slow request finished during the probe; make it slower"
        assert refused is not None and "shutting down" in assert_error_body(refused, 503)

        response = slow.result(timeout=drain_timeout + EVENT_S)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1000
    assert server.wait(timeout=drain_timeout + EVENT_S) == 0, server.logs()
    assert time.monotonic() - signalled < drain_timeout


def test_a_model_that_does_not_load_stops_every_worker_with_exit_status_1(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server([tmp_path / "no-such-model"], ["--workers", "2"], wait=False)
    assert server.wait(timeout=EVENT_S) == 1, server.logs()
    assert "model directory not found" in server.logs()
    assert "a worker process failed to start" in server.logs()


# --- gunicorn ---------------------------------------------------------------------------------------


class GunicornProcess(ServerProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{self.port}"]


@pytest.mark.skipif(
    importlib.util.find_spec("gunicorn") is None or importlib.util.find_spec("uvicorn_worker") is None,
    reason="gunicorn and uvicorn-worker are not installed (they are in the dev extra)",
)
def test_gunicorn_example_serves_with_two_workers(xlmr_dir: Path, reranker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"RERANKD_MODEL": str(xlmr_dir), "RERANKD_DEVICE": "cpu", "RERANKD_DTYPE": "fp32", "RERANKD_WORKERS": "2",
           "RERANKD_NO_CACHE": "1", "RERANKD_DRAIN_TIMEOUT": "5", "RERANKD_LOG_LEVEL": "info"}
    server = GunicornProcess([], env=env, log_dir=tmp_path)
    try:
        server.start()
        # /ready answers once one worker is up; a worker still loading when SIGTERM comes exits without a drain.
        wait_until(lambda: server.logs().count("ready: serving") == 2, timeout=EVENT_S, message="both workers ready")
        for _ in range(6):
            response = httpx.post(server.url + "/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
            assert response.status_code == 200, response.text
            scores = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
            expected = reranker.compute_score([(QUERY, d) for d in DOCS])
            assert [scores[i] for i in range(len(DOCS))] == pytest.approx(expected, abs=1e-5)
        wait_until(lambda: request_counts(server)[0] == 6, timeout=EVENT_S, message="6 requests counted")
        assert server.logs().count("Booting worker") == 2
        assert server.stop(timeout=EVENT_S) == 0, server.logs()
        assert server.logs().count("SIGTERM: draining") == 2, "a worker did not drain"
    finally:
        server.kill()
