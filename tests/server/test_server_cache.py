"""The score cache through the HTTP server: LRU hits, and a Redis shared by two servers (faults: test_redis_faults.py)."""

from __future__ import annotations

import pytest
import redis
from helpers import wait_until

CACHE_ON = {"RERANKD_NO_CACHE": "0"}
DOCS = ["Pandas eat bamboo.", "Panda Express sells orange chicken.", "熊猫吃竹子。", "A long one. " * 400]


def rerank(server, documents, **extra):
    with server.client() as client:
        response = client.post("/v1/rerank", json={"query": "What do pandas eat?", "documents": documents, **extra})
    assert response.status_code == 200, response.text
    return response


def by_index(response):
    return {r["index"]: r for r in response.json()["results"]}


def test_a_repeated_request_is_answered_from_the_cache_with_the_same_scores(start_server, xlmr_dir):
    server = start_server([xlmr_dir], env=CACHE_ON)
    first, second = rerank(server, DOCS), rerank(server, DOCS)
    assert first.headers["x-cache-hits"] == "0" and second.headers["x-cache-hits"] == str(len(DOCS))
    assert by_index(first) == by_index(second)  # scores, truncation flags and documents
    assert first.json()["usage"] == second.json()["usage"]
    assert server.metric("rerankd_cache_hits_total", layer="memory") == len(DOCS)
    # Raw and normalized requests share entries.
    raw = rerank(server, DOCS, raw_scores=True)
    assert raw.headers["x-cache-hits"] == str(len(DOCS))
    assert all("raw_score" in r for r in raw.json()["results"])


def test_identical_documents_in_one_request_are_scored_once(start_server, xlmr_dir):
    server = start_server([xlmr_dir], env=CACHE_ON)
    response = rerank(server, ["same", "other", "same", "same"])
    assert server.metric("rerankd_batch_size_sum", model=str(xlmr_dir)) == 2
    results = by_index(response)
    assert results[0]["relevance_score"] == results[2]["relevance_score"] == results[3]["relevance_score"]


def test_no_cache_scores_every_time(start_server, xlmr_dir):
    server = start_server([xlmr_dir], ["--no-cache"], env=CACHE_ON)
    rerank(server, DOCS)
    assert rerank(server, DOCS).headers["x-cache-hits"] == "0"
    with server.client() as client:
        assert client.get("/info").json()["cache"] is None


def test_truncation_options_are_part_of_the_key(start_server, xlmr_dir):
    server = start_server([xlmr_dir], env=CACHE_ON)
    full = rerank(server, DOCS)
    capped = rerank(server, DOCS, max_tokens_per_doc=8)
    assert capped.headers["x-cache-hits"] == "0"
    assert capped.json()["usage"]["total_tokens"] < full.json()["usage"]["total_tokens"]


def test_two_servers_share_scores_through_redis(start_server, xlmr_dir, redis_server):
    args = ["--cache-url", redis_server.url]
    first = start_server([xlmr_dir], args, env=CACHE_ON)
    second = start_server([xlmr_dir], args, env=CACHE_ON)
    scored = rerank(first, DOCS)
    # The first server writes to Redis in the background, after its response: wait for the writes.
    store = redis.Redis.from_url(redis_server.url)
    wait_until(lambda: store.dbsize() == len(DOCS), timeout=30, message="the first server's writes in redis")
    shared = rerank(second, DOCS)
    assert shared.headers["x-cache-hits"] == str(len(DOCS))
    assert second.metric("rerankd_cache_hits_total", layer="redis") == len(DOCS)
    assert by_index(scored) == by_index(shared)
    with second.client() as client:
        assert client.get("/info").json()["cache"]["kind"] == "memory+redis"


@pytest.mark.parametrize("url", ["http://x", "redis-ish"])
def test_a_cache_url_that_is_not_redis_is_refused_at_start(start_server, xlmr_dir, url):
    from server_harness import ServerError

    with pytest.raises(ServerError, match="cache_url must be a redis://"):
        start_server([xlmr_dir], ["--cache-url", url], env=CACHE_ON)
