"""Long documents over HTTP: truncation=chunk and the length fields of every dialect (docs/api.md)."""

from __future__ import annotations

import math

import httpx
import pytest
from server_harness import LONG_EN, QUERY, ServerProcess, assert_error_body, assert_tei_error_body

from rerankd import Reranker

TOL = 1e-5
LONG = LONG_EN * 2  # about 2.8k tokens: several windows of 512


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def post(client: httpx.Client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_rerank_chunks_long_documents_and_says_where_the_match_is(client: httpx.Client, reranker: Reranker) -> None:
    documents = [LONG, "Pandas eat bamboo."]
    body = post(client, "/rerank", {"query": QUERY, "documents": documents, "truncation": "chunk",
                                    "return_chunk_scores": True})
    expected = reranker.score_query(QUERY, documents, truncation="chunk")
    by_index = {r["index"]: r for r in body["results"]}
    for i, result in by_index.items():
        chunked = expected.chunks[i]
        assert result["relevance_score"] == pytest_approx(sigmoid(chunked.logit))
        assert result["chunks"] == chunked.chunks and not result["truncated"]
        assert result["highlight"] == {"start": chunked.highlight.start, "end": chunked.highlight.end}
        assert [(w["start"], w["end"]) for w in result["chunk_scores"]] == [(w.start, w.end) for w in chunked.windows]
        best = max(result["chunk_scores"], key=lambda w: w["raw_score"])
        assert result["raw_score" if "raw_score" in result else "relevance_score"] == pytest_approx(
            best["raw_score"] if "raw_score" in result else best["score"])
    assert by_index[0]["chunks"] > 3
    assert by_index[1]["highlight"] == {"start": 0, "end": len(documents[1])}
    # The usage counts every window's tokens.
    assert body["usage"]["total_tokens"] == sum(expected.num_tokens)


def test_cohere_v1_max_chunks_per_doc_asks_for_chunk_and_bounds_the_windows(client: httpx.Client) -> None:
    body = post(client, "/v1/rerank", {"query": QUERY, "documents": [LONG], "max_chunks_per_doc": 2})
    [result] = body["results"]
    assert result["chunks"] == 2 and result["truncated"]
    assert "left unscored" in body["meta"]["warnings"][0]
    assert "chunk_scores" not in result


def test_rerankd_truncation_wins_over_tei_truncate_and_max_chunks(client: httpx.Client, reranker: Reranker) -> None:
    plain = post(client, "/rerank", {"query": QUERY, "texts": [LONG], "truncate": False, "truncation": "truncate",
                                     "max_chunks_per_doc": 3, "raw_scores": True})
    [pair] = reranker.encoder.encode(QUERY, [LONG])
    assert plain[0]["score"] == pytest_approx(float(reranker.scorer.score([pair])[0][0]))
    assert "chunks" not in plain[0]


def test_tei_left_truncation_keeps_the_end_of_the_document(client: httpx.Client, reranker: Reranker) -> None:
    body = post(client, "/rerank", {"query": QUERY, "texts": [LONG], "truncation_direction": "Left",
                                    "raw_scores": True})
    [left] = reranker.encoder.encode(QUERY, [LONG], keep="end")
    [right] = reranker.encoder.encode(QUERY, [LONG])
    logits = reranker.scorer.score([left, right])[0]
    assert body[0]["score"] == pytest_approx(float(logits[0]))
    assert abs(logits[0] - logits[1]) > 1e-4, "the two ends should score differently, or this proves little"


def test_tei_chunk_answers_in_tei_shape_and_refuses_left_with_chunk(client: httpx.Client) -> None:
    body = post(client, "/rerank", {"query": QUERY, "texts": [LONG, "bamboo"], "truncation": "chunk"})
    assert {r["index"] for r in body} == {0, 1} and all("highlight" in r and r["chunks"] >= 1 for r in body)
    response = client.post("/rerank", json={"query": QUERY, "texts": [LONG], "truncation": "chunk",
                                            "truncation_direction": "Left"})
    assert "truncation_direction" in assert_tei_error_body(response, 400)


def test_vllm_caps_shape_the_windows(client: httpx.Client, reranker: Reranker) -> None:
    body = post(client, "/score", {"text_1": QUERY, "text_2": [LONG], "truncation": "chunk",
                                   "truncate_prompt_tokens": 128, "max_tokens_per_doc": 600})
    [data] = body["data"]
    tokens = reranker.encoder.token_ids([LONG])[0]
    assert data["chunks"] >= 5  # 600 document tokens in windows of under 128 with the query
    assert body["usage"]["total_tokens"] <= data["chunks"] * 128
    assert data["highlight"]["end"] < len(LONG) and len(tokens) > 600
    capped = post(client, "/rerank", {"query": QUERY, "documents": [LONG], "truncation": "chunk",
                                      "max_tokens_per_doc": 600})
    assert capped["results"][0]["truncated"] and capped["results"][0]["chunks"] == 2


def test_info_shows_the_chunk_settings(client: httpx.Client) -> None:
    info = client.get("/info").json()
    assert (info["truncation"], info["chunk_overlap"], info["chunk_aggregate"], info["max_chunks_per_doc"]) == (
        "truncate", 64, "max", 16)


def test_a_bad_chunk_field_is_a_422_naming_it(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": [LONG], "chunk_aggregate": "median"})
    assert "chunk_aggregate" in assert_error_body(response, 422)


def test_a_repeated_long_document_is_answered_from_the_cache(start_server, xlmr_dir) -> None:
    server: ServerProcess = start_server([xlmr_dir], ["--truncation", "chunk"], env={"RERANKD_NO_CACHE": "0"})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        first = client.post("/rerank", json={"query": QUERY, "documents": [LONG]})
        second = client.post("/rerank", json={"query": QUERY, "documents": [LONG]})
    windows = first.json()["results"][0]["chunks"]
    assert first.headers["x-cache-hits"] == "0" and second.headers["x-cache-hits"] == str(windows)
    assert first.json()["results"][0]["relevance_score"] == second.json()["results"][0]["relevance_score"]


def pytest_approx(value: float) -> object:
    return pytest.approx(value, abs=TOL)
