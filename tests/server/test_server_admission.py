"""Admission over real HTTP: 429 with a computed Retry-After, 413 for what can never fit, capacity given back,
refusals counted by reason, and /health telling the truth about the model thread.

Each limit is set so that it is crossed whatever the speed of this machine: the busy case
is "anything queued at all", never "about N seconds of work".
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from server_harness import (
    DOCS,
    QUERY,
    ServerProcess,
    assert_error_body,
    assert_tei_error_body,
    slow_documents,
    wait_until,
)

# About 2 million tokens: many seconds of model time even for the tiny fixture on a fast CPU, so the
# request is still in the model when the test looks.
SLOW_DOCUMENTS = 4000
# A long --request-timeout: on a slow or busy machine the request's idle service time could otherwise pass
# the default 120 s, and it would get a 413 instead of going into the model.
ADMIT_SLOW = ("--max-documents", str(SLOW_DOCUMENTS), "--request-timeout", "3600")


class Slow:
    """A big request sent over a plain socket, in the model until the test hangs up (or it ends)."""

    def __init__(self, server: ServerProcess) -> None:
        body = json.dumps({"query": QUERY, "documents": slow_documents(SLOW_DOCUMENTS), "return_documents": False})
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        self.sock.sendall((f"POST /rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        wait_until(lambda: self._refused() or server.queue_pairs() > 0, timeout=120,
                   message="the slow request in the model")
        assert server.queue_pairs() > 0, "the slow request was answered before it reached the model"

    def _refused(self) -> bool:
        """Whether the server has already answered (a refusal): then there is nothing to wait for."""
        self.sock.setblocking(False)
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)

    def hang_up(self) -> None:
        self.sock.close()


def refused(server: ServerProcess, reason: str) -> float:
    return sum(v for (name, labels), v in server.metrics().items()
               if name == "rerankd_refused_requests_total" and ("reason", reason) in labels)


@pytest.fixture(scope="module")
def busy(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    """Any work queued at all is more than a new request may wait behind."""
    return start_module_server([xlmr_dir], ["--max-queue-wait", "0.000001", *ADMIT_SLOW])


def test_a_request_behind_too_much_work_gets_429_with_a_computed_retry_after(busy: ServerProcess) -> None:
    before = refused(busy, "queue_wait")
    slow = Slow(busy)
    with busy.client() as c:
        started = time.perf_counter()
        response = c.post("/rerank", json={"query": QUERY, "documents": DOCS})
        elapsed = time.perf_counter() - started
        message = assert_error_body(response, 429)
        assert "--max-queue-wait" in message and "s of work is queued ahead" in message
        # How long the excess takes to drain at the measured speed, in whole seconds.
        assert int(response.headers["retry-after"]) >= 1
        assert_error_body(c.post("/score", json={"text_1": QUERY, "text_2": DOCS}), 429)
        assert_tei_error_body(c.post("/rerank", json={"query": QUERY, "texts": DOCS}), 429)
    assert elapsed < 30  # refused at the door, not after waiting (a generous bound: no timing claim)
    assert refused(busy, "queue_wait") - before == 3
    slow.hang_up()
    # The abandoned request leaves the queue; the next request is served.
    wait_until(lambda: busy.queue_pairs() == 0, timeout=60, message="the queue empty again")
    with busy.client() as c:
        assert c.post("/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200


def test_too_many_requests_in_flight_get_429_at_once(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server([xlmr_dir], ["--max-concurrent-requests", "1", *ADMIT_SLOW])
    slow = Slow(server)
    with server.client() as c:
        response = c.post("/rerank", json={"query": QUERY, "documents": DOCS})
        assert "--max-concurrent-requests" in assert_error_body(response, 429)
        assert int(response.headers["retry-after"]) >= 1
    assert refused(server, "in_flight") == 1
    slow.hang_up()
    # The slot comes back when the abandoned request is dropped.
    wait_until(lambda: server.queue_pairs() == 0, timeout=60, message="the queue empty again")
    with server.client() as c:
        wait_until(lambda: c.post("/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200,
                   timeout=30, message="a request served once the slot is free")


def test_a_full_queue_gets_429(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server(
        [xlmr_dir], ["--max-queued-pairs", str(SLOW_DOCUMENTS), "--max-queue-wait", "600", *ADMIT_SLOW])
    slow = Slow(server)
    with server.client() as c:
        response = c.post("/rerank", json={"query": "other", "documents": slow_documents(SLOW_DOCUMENTS)})
        assert "--max-queued-pairs" in assert_error_body(response, 429)
        assert int(response.headers["retry-after"]) >= 1
    assert refused(server, "queue_pairs") == 1
    slow.hang_up()


def test_a_request_that_needs_more_than_the_request_timeout_is_413(start_server, mini_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # 1000 pairs of about 490 tokens through the mini shape on one thread: well under a second to tokenize,
    # a minute or more of model time on any CPU core; the timeout sits between the two with a wide margin.
    server: ServerProcess = start_server([mini_dir], ["--request-timeout", "20", "--threads", "1"])
    with server.client() as c:
        response = c.post("/rerank", json={"query": QUERY, "documents": slow_documents(1000)})
        message = assert_error_body(response, 413)
        assert "--request-timeout" in message and "split it into requests of at most" in message
    assert refused(server, "too_large") == 1


def test_health_turns_503_while_the_model_makes_no_progress(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # Every batch takes longer than a microsecond: while work waits, the model counts as stalled.
    server: ServerProcess = start_server([xlmr_dir], ["--stall-timeout", "0.000001", *ADMIT_SLOW])
    with server.client() as c:
        assert c.get("/health").json() == {"status": "ok"}
        slow = Slow(server)
        seen: list[httpx.Response] = []
        wait_until(lambda: seen.append(c.get("/health")) or seen[-1].status_code == 503, timeout=60,
                   message="/health 503 while stalled")
        body = seen[-1].json()
        assert body["status"] == "unhealthy" and "--stall-timeout" in body["reason"]
        slow.hang_up()
        # Nothing waiting: nothing stalled.
        wait_until(lambda: c.get("/health").status_code == 200, timeout=60, message="/health 200 when idle")


def test_info_shows_the_admission_limits(busy: ServerProcess) -> None:
    info = httpx.get(busy.url + "/info", timeout=10).json()
    assert info["max_concurrent_requests"] == 512
    assert info["max_queue_wait"] == pytest.approx(0.000001)
    assert info["request_timeout"] == 3600


def test_metrics_show_throughput_wait_and_queue_age(busy: ServerProcess) -> None:
    names = {name for name, _ in busy.metrics()}
    for name in ("rerankd_throughput_tokens_per_second", "rerankd_estimated_wait_seconds",
                 "rerankd_queue_oldest_seconds", "rerankd_queue_tokens", "rerankd_queue_pairs"):
        assert name in names, name
    assert busy.metric("rerankd_throughput_tokens_per_second", model=str(busy.models[0])) > 0


def test_a_model_that_fails_to_load_makes_the_server_exit_non_zero(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    server: ServerProcess = start_server([broken], wait=False)
    assert server.wait(timeout=120) == 1, server.logs()
    assert "no model to serve" in server.logs()

