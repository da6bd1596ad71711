"""Faults under load, against a real `rerankd serve`: whatever happens, no accepted request is lost. Each
request the server took gets its scores, or an error that says why."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
from server_harness import PATIENT, QUERY, ServerProcess, assert_error_body, free_port, slow_documents, wait_until

CLIENTS = 8
DOCUMENTS = 40  # per request: many batches each on the tiny fixture, so requests overlap


def test_sigterm_under_load_answers_every_request_in_flight(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server([xlmr_dir], ["--drain-timeout", "120", *PATIENT])
    signalled = threading.Event()
    signal_at = [float("inf")]
    # (documents answered, or -1; what went wrong; when the answer came)
    outcomes: list[tuple[int, str | None, float]] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            round_ = 0
            while not signalled.is_set():  # nothing new is sent once the signal is out
                round_ += 1
                body = {"query": f"{QUERY} {seed} {round_}", "documents": slow_documents(DOCUMENTS, words=60),
                        "return_documents": False}
                try:
                    response = c.post("/rerank", json=body)
                    ok = response.status_code == 200
                    outcome = (len(response.json()["results"]), None if ok else response.text, time.monotonic())
                except httpx.HTTPError as exc:
                    outcome = (-1, repr(exc), time.monotonic())
                with lock:
                    outcomes.append(outcome)

    def refused_at_the_door(what: str | None, answered_at: float) -> bool:
        # A request already on its way when the signal went out may reach a draining server: it is refused
        # cleanly (503, before any work), never accepted and lost.
        return answered_at >= signal_at[0] and what is not None and "shutting down" in what

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(outcomes) >= CLIENTS and server.queue_requests() >= CLIENTS // 2, timeout=120,
               message="the server under load, several requests queued")
    signal_at[0] = time.monotonic()
    server.signal(signal.SIGTERM)
    signalled.set()
    for thread in threads:
        thread.join(timeout=240)
        assert not thread.is_alive(), "a request in flight at SIGTERM got no answer"

    lost = [what for answered, what, at in outcomes if answered != DOCUMENTS and not refused_at_the_door(what, at)]
    assert not lost, lost[:3]
    assert sum(answered == DOCUMENTS for answered, _, _ in outcomes) >= 2 * CLIENTS
    assert server.wait(timeout=60) in (0, -signal.SIGTERM), server.logs()


def test_a_batch_that_raises_fails_its_own_request_and_no_other(xlmr_dir: Path) -> None:
    """In-process, so the test can make one request's batches raise: the real app, model and scheduler."""
    import uvicorn

    from rerankd.server.app import create_app
    from rerankd.server.metrics import Metrics
    from rerankd.server.models import ModelRegistry
    from rerankd.settings import Settings

    settings = Settings(model=str(xlmr_dir), device="cpu", no_cache=True, max_queue_wait=600, request_timeout=600)
    metrics = Metrics()
    registry = ModelRegistry(settings, [("default", str(xlmr_dir))], metrics)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, registry, metrics), host="127.0.0.1",
                                           port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_until(lambda: _ready(url), timeout=120, message="the in-process server ready")
        service = registry.get(None)
        # Big requests span many batches; the one-document poisoned request fits one batch, which it gets
        # to itself, so nothing else can be in the batch that raises.
        good = [{"query": f"{QUERY} {i}", "documents": slow_documents(DOCUMENTS, words=60),
                 "return_documents": False} for i in range(4)]
        bad = {"query": "zqxj 98765 poison", "documents": ["x"]}
        good_ids = {t for body in good for pair in service.encoder.encode(body["query"], body["documents"])
                    for t in pair.input_ids}
        poison = set(service.encoder.encode(bad["query"], bad["documents"])[0].input_ids) - good_ids
        assert poison, "the marker query shares every token with the good requests"
        run_batch = service.scorer.run_batch

        def failing(pairs, stats=None):  # type: ignore[no-untyped-def]
            if any(poison & set(pair.input_ids) for pair in pairs):
                raise RuntimeError("the model raised on this batch")
            return run_batch(pairs, stats)

        service.scorer.run_batch = failing
        answers: dict[int, httpx.Response] = {}

        def send(i: int, body: dict) -> None:
            answers[i] = httpx.post(url + "/rerank", json=body, timeout=300)

        senders = [threading.Thread(target=send, args=(i, body)) for i, body in enumerate([*good[:2], bad, *good[2:]])]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=300)
        statuses = [answers[i].status_code for i in range(len(senders))]
        assert statuses == [200, 200, 500, 200, 200], [answers[i].text[:200] for i in range(len(senders))]
        assert_error_body(answers[2], 500)
        assert all(len(answers[i].json()["results"]) == DOCUMENTS for i in (0, 1, 3, 4))
        again = httpx.post(url + "/rerank", json=good[0], timeout=300)
        assert again.status_code == 200 and len(again.json()["results"]) == DOCUMENTS
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
