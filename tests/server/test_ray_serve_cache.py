"""Ray Serve replicas share one Redis score cache (`--ray` with `--cache-url`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import RedisServer
from server_harness import QUERY, ServerProcess, wait_until

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (it is in the dev extra)")

DOCUMENTS = ["Giant pandas eat bamboo shoots.", "大熊猫吃竹子。", "Red pandas sleep in trees.", "Panda Express."]


@pytest.fixture(scope="module")
def two_replicas(start_module_server, xlmr_dir: Path, shared_redis: RedisServer) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    # --cache-size 1: a replica's own LRU holds one pair, so a request whose pairs are all cached was served
    # from Redis, whichever replica took it.
    server = start_module_server(
        [xlmr_dir],
        ["--ray", "--ray-min-replicas", "2", "--ray-max-replicas", "2", "--cache-url", shared_redis.url,
         "--cache-size", "1"],
        env={"RERANKD_NO_CACHE": "0"},
    )
    yield server
    server.signal(signal.SIGTERM)
    server.wait(timeout=60)


def test_replicas_share_scores_through_redis(two_replicas: ServerProcess, shared_redis: RedisServer) -> None:
    body = {"query": QUERY, "documents": DOCUMENTS, "return_documents": False}
    with two_replicas.client() as client:
        first = client.post("/rerank", json=body)
        assert first.status_code == 200, first.text
        assert first.headers["x-cache-hits"] == "0"
        # Writes go out in the background, after the response: wait for them.
        store = redis.Redis.from_url(shared_redis.url)
        wait_until(lambda: store.dbsize() == len(DOCUMENTS), timeout=30, message="the writes in redis")
        # Ray spreads these over both replicas; each answer is fully cached, the same scores.
        for _ in range(6):
            again = client.post("/rerank", json=body)
            assert again.status_code == 200, again.text
            assert again.headers["x-cache-hits"] == str(len(DOCUMENTS))
            assert again.json()["results"] == first.json()["results"]
