"""Redis faults against a real `rerankd serve` and a real redis-server: down at start, restarted, killed
under load, and slowed by a delaying proxy. Every request gets its scores; Redis only ever costs a miss."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from delay_proxy import DelayProxy
from helpers import RedisServer
from server_harness import QUERY, ServerProcess, wait_until

# A quick breaker, so a test sees Redis come back within seconds: probes at most 2 s apart.
FAST = ("--cache-timeout", "0.2", "--cache-breaker-backoff", "2")
CACHE_ON = {"RERANKD_NO_CACHE": "0"}


def rerank(server: ServerProcess, documents: list[str]) -> httpx.Response:
    with server.client() as client:
        response = client.post("/rerank", json={"query": QUERY, "documents": documents, "return_documents": False})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == len(documents)
    return response


def breaker_open(server: ServerProcess) -> float | None:
    return server.metric("rerankd_cache_breaker_open", layer="redis")


def dropped_writes(server: ServerProcess) -> float:
    return sum(v for (name, _), v in server.metrics().items() if name == "rerankd_cache_dropped_writes_total")


def pending_writes(server: ServerProcess) -> int:
    """Pairs the server has yet to write to Redis: writes go out in the background, after the response."""
    with server.client() as client:
        return client.get("/info").json()["cache"]["redis"]["write_queue"]["pending"]


def test_redis_down_at_start_the_server_serves_and_uses_redis_once_it_is_up(
    start_server, xlmr_dir: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    store = RedisServer(tmp_path)  # its port is free: nothing listens there yet
    server = start_server([xlmr_dir], ["--cache-url", store.url, *FAST], env=CACHE_ON)
    for i in range(5):
        assert rerank(server, [f"scored while redis is down {i}"]).headers["x-cache-hits"] == "0"
    wait_until(lambda: breaker_open(server) == 1, timeout=30, message="the breaker open")
    with server.client() as client:
        assert client.get("/info").json()["cache"]["redis"]["breaker"]["state"] == "open"

    store.start()
    try:
        wait_until(lambda: breaker_open(server) == 0, timeout=30, message="the breaker closed by a probe")
        rerank(server, ["scored once redis is up"])
        # Writes go out in the background: poll Redis for them, with a deadline. Those made while Redis was
        # down waited in the queue, so every pair scored is there.
        wait_until(lambda: redis.Redis.from_url(store.url).dbsize() == 6, timeout=30, message="the writes in redis")
        assert dropped_writes(server) == 0
    finally:
        store.stop()


@pytest.fixture(scope="module")
def server(start_module_server, xlmr_dir: Path, shared_redis: RedisServer) -> ServerProcess:  # type: ignore[no-untyped-def]
    """One server for the restart tests; each test restarts Redis itself. --cache-size 1: the LRU keeps
    one pair, so a repeated request is answered by Redis."""
    return start_module_server([xlmr_dir], ["--cache-url", shared_redis.url, "--cache-size", "1", *FAST],
                               env=CACHE_ON)


def test_after_a_restart_the_first_request_reads_redis_through_a_fresh_connection(
    server: ServerProcess, shared_redis: RedisServer
) -> None:
    documents = [f"read after a restart {i}" for i in range(4)]
    rerank(server, documents)
    store = redis.Redis.from_url(shared_redis.url)
    wait_until(lambda: pending_writes(server) == 0, timeout=30, message="the writes sent")
    saved = {key: store.get(key) for key in store.keys()}
    errors = server.metric("rerankd_cache_errors_total", layer="redis", op="get") or 0

    shared_redis.stop()  # the server's pooled connections die with it, unnoticed: no request is made meanwhile
    shared_redis.start()
    for key, value in saved.items():  # back with its data, as a Redis that persists it would be
        store.set(key, value)
    assert rerank(server, documents).headers["x-cache-hits"] == str(len(documents))
    assert (server.metric("rerankd_cache_errors_total", layer="redis", op="get") or 0) == errors


def test_redis_killed_and_restarted_under_load_every_request_gets_its_scores(
    server: ServerProcess, shared_redis: RedisServer
) -> None:
    stop = threading.Event()
    outcomes: list[str | None] = []  # None: the request got all its scores; else what went wrong
    lock = threading.Lock()

    def client(seed: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            round_ = 0
            while not stop.is_set():
                round_ += 1
                # Two new pairs (misses, then writes) and one every client shares (hits).
                documents = [f"client {seed} round {round_} a", f"client {seed} round {round_} b", "shared"]
                try:
                    response = c.post("/rerank", json={"query": QUERY, "documents": documents})
                    ok = response.status_code == 200 and len(response.json()["results"]) == len(documents)
                    outcome = None if ok else f"{response.status_code}: {response.text}"
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(outcomes) >= 20, timeout=60, message="requests before the kill")
        shared_redis.stop()
        wait_until(lambda: breaker_open(server) == 1, timeout=30, message="the breaker open")
        shared_redis.start()
        wait_until(lambda: breaker_open(server) == 0, timeout=30, message="the breaker closed by a probe")
        answered = len(outcomes)
        wait_until(lambda: len(outcomes) >= answered + 20, timeout=60, message="requests after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    lost = [what for what in outcomes if what is not None]
    assert not lost, lost[:3]
    # Writes flow again, and none was given up: those that failed waited in the queue for Redis to return.
    wait_until(lambda: pending_writes(server) == 0, timeout=30, message="the writes sent")
    assert redis.Redis.from_url(shared_redis.url).dbsize() > 0
    assert dropped_writes(server) == 0


def test_a_slow_redis_costs_requests_the_timeout_only_until_the_breaker_skips_it(
    start_server, xlmr_dir: Path, redis_server: RedisServer  # type: ignore[no-untyped-def]
) -> None:
    proxy = DelayProxy(redis_server.port)
    timeout = 1.0
    server = None
    try:
        server = start_server(
            [xlmr_dir],
            ["--cache-url", proxy.url, "--cache-size", "1", "--cache-timeout", str(timeout),
             "--cache-breaker-threshold", "3", "--cache-breaker-backoff", "2"],
            env=CACHE_ON,
        )
        early = [f"scored before redis slowed {i}" for i in range(3)]
        rerank(server, early)
        wait_until(lambda: redis.Redis.from_url(redis_server.url).dbsize() == len(early), timeout=30,
                   message="the writes in redis")

        proxy.delay = 5.0  # every reply from Redis held 5 s: far past the timeout
        seconds = []
        for i in range(10):
            started = time.monotonic()
            rerank(server, [f"scored while redis is slow {i}"])
            seconds.append(time.monotonic() - started)
        # The first requests wait for Redis, each up to the timeout; three failures in a row (reads, or the
        # writes that go out meanwhile) open the breaker, and from then on requests skip Redis.
        waited = sum(s >= timeout for s in seconds)
        assert 1 <= waited <= 3 and all(s >= timeout for s in seconds[:waited]), seconds
        assert statistics.median(seconds[waited:]) < timeout / 2, seconds
        assert breaker_open(server) == 1
        assert server.metric("rerankd_cache_errors_total", layer="redis", op="get") == waited

        proxy.delay = 0
        wait_until(lambda: breaker_open(server) == 0, timeout=30, message="the breaker closed by a probe")
        assert rerank(server, early).headers["x-cache-hits"] == str(len(early))  # Redis kept them
    finally:
        if server is not None:
            server.stop()  # before the proxy goes: its shutdown sends the writes it still holds
        proxy.close()
