"""The rerank and score APIs over real HTTP: every dialect, TEI, vLLM /score, exactness and long inputs."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cohere
import httpx
import pytest
from server_harness import (
    DOCS,
    LONG_EN,
    LONG_ZH,
    PAIRS,
    QUERY,
    ServerProcess,
    assert_error_body,
    assert_tei_error_body,
)

from rerankd import Reranker

TOL = 1e-5


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rerank(client: httpx.Client, body: dict, path: str = "/rerank") -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_rerank_shape(body: dict, n_results: int, *, with_documents: bool = True) -> None:
    assert set(body) >= {"id", "model", "results", "usage", "meta"}
    assert isinstance(body["id"], str) and body["id"]
    assert isinstance(body["model"], str) and body["model"]
    assert len(body["results"]) == n_results
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True), "results must be best first"
    for r in body["results"]:
        assert isinstance(r["index"], int)
        assert 0.0 <= r["relevance_score"] <= 1.0
        assert isinstance(r["truncated"], bool)
        assert ("document" in r) is with_documents
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    meta = body["meta"]
    assert meta["api_version"]["version"]
    assert meta["billed_units"]["search_units"] >= 1
    assert meta["tokens"]["input_tokens"] == body["usage"]["total_tokens"]


def library_scores(reranker: Reranker, query: str, documents: list[str], normalize: bool = True) -> list[float]:
    return reranker.compute_score([(query, d) for d in documents], normalize=normalize)


# --- Cohere ----------------------------------------------------------------------------------


def test_cohere_v1_client_reranks(default_server: ServerProcess, reranker: Reranker) -> None:
    co = cohere.Client(base_url=default_server.url, api_key="x")
    response = co.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    expected = library_scores(reranker, QUERY, DOCS)
    best = sorted(range(len(DOCS)), key=lambda i: -expected[i])[:3]
    assert [r.index for r in response.results] == best
    for r in response.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=TOL)
        assert r.document is not None and r.document.text == DOCS[r.index]
    assert response.id
    assert response.meta is not None and response.meta.billed_units is not None


def test_cohere_v1_client_without_documents(default_server: ServerProcess) -> None:
    co = cohere.Client(base_url=default_server.url, api_key="x")
    response = co.rerank(model="m", query=QUERY, documents=DOCS, return_documents=False, max_chunks_per_doc=10)
    assert len(response.results) == len(DOCS)
    assert all(r.document is None for r in response.results)


def test_cohere_v1_client_rank_fields_with_object_documents(default_server: ServerProcess, reranker: Reranker) -> None:
    co = cohere.Client(base_url=default_server.url, api_key="x")
    docs = [{"title": "Pandas", "body": DOCS[0]}, {"title": "Fast food", "body": DOCS[1]}]
    response = co.rerank(model="m", query=QUERY, documents=docs, rank_fields=["title", "body"])
    texts = [f"title: {d['title']}\nbody: {d['body']}" for d in docs]
    expected = library_scores(reranker, QUERY, texts)
    assert sorted(r.index for r in response.results) == [0, 1]
    for r in response.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=TOL)


def test_cohere_v2_client_reranks(default_server: ServerProcess, reranker: Reranker) -> None:
    co = cohere.ClientV2(base_url=default_server.url, api_key="x")
    response = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2, priority=1)
    expected = library_scores(reranker, QUERY, DOCS)
    assert [r.index for r in response.results] == sorted(range(len(DOCS)), key=lambda i: -expected[i])[:2]
    for r in response.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=TOL)
    assert response.id


def test_cohere_v2_client_max_tokens_per_doc(default_server: ServerProcess) -> None:
    co = cohere.ClientV2(base_url=default_server.url, api_key="x")
    full = co.rerank(model="m", query=QUERY, documents=[LONG_EN])
    cut = co.rerank(model="m", query=QUERY, documents=[LONG_EN], max_tokens_per_doc=16)
    assert cut.meta is not None and full.meta is not None
    assert cut.meta.tokens.input_tokens < full.meta.tokens.input_tokens


# --- Jina / vLLM / generic body --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_rerank_routes_share_one_handler(client: httpx.Client, reranker: Reranker, path: str) -> None:
    body = rerank(client, {"model": "BAAI/bge-reranker-v2-m3", "query": QUERY, "documents": DOCS, "top_n": 3}, path)
    assert_rerank_shape(body, 3)
    expected = library_scores(reranker, QUERY, DOCS)
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=TOL)
        assert r["document"] == {"text": DOCS[r["index"]]}


def test_jina_body_with_string_and_object_documents(client: httpx.Client, reranker: Reranker) -> None:
    documents = [DOCS[0], {"text": DOCS[1]}, {"text": DOCS[2], "id": "x"}]
    body = rerank(
        client,
        {
            "model": "jina-reranker-v2-base-multilingual",
            "query": QUERY,
            "documents": documents,
            "top_n": 2,
            "return_documents": True,
        },
        "/v1/rerank",
    )
    assert_rerank_shape(body, 2)
    expected = library_scores(reranker, QUERY, DOCS[:3])
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=TOL)
        assert r["document"]["text"] == DOCS[r["index"]]


@pytest.mark.parametrize(("value", "with_documents"), [(True, True), (False, False), ("true", True), ("false", False)])
def test_return_documents_accepts_bools_and_strings(client: httpx.Client, value: object, with_documents: bool) -> None:
    body = rerank(client, {"query": QUERY, "documents": DOCS, "return_documents": value}, "/v1/rerank")
    assert_rerank_shape(body, len(DOCS), with_documents=with_documents)


def test_return_documents_defaults_to_true(client: httpx.Client) -> None:
    body = rerank(client, {"query": QUERY, "documents": DOCS})
    assert all(r["document"]["text"] == DOCS[r["index"]] for r in body["results"])


@pytest.mark.parametrize("top_n", [None, 0, len(DOCS), len(DOCS) + 10, 100000])
def test_top_n_missing_zero_or_too_large_means_all(client: httpx.Client, top_n: int | None) -> None:
    request: dict = {"query": QUERY, "documents": DOCS}
    if top_n is not None:
        request["top_n"] = top_n
    body = rerank(client, request)
    assert_rerank_shape(body, len(DOCS))
    assert sorted(r["index"] for r in body["results"]) == list(range(len(DOCS)))


def test_top_n_keeps_the_best(client: httpx.Client) -> None:
    everything = rerank(client, {"query": QUERY, "documents": DOCS})["results"]
    top2 = rerank(client, {"query": QUERY, "documents": DOCS, "top_n": 2})["results"]
    assert top2 == everything[:2]


def test_rank_fields_join_fields_of_object_documents(client: httpx.Client, reranker: Reranker) -> None:
    docs = [{"title": "Pandas", "body": DOCS[0], "tag": "x"}, {"title": "Fast food", "body": DOCS[1]}]
    body = rerank(client, {"query": QUERY, "documents": docs, "rank_fields": ["title", "body"]})
    texts = [f"title: {d['title']}\nbody: {d['body']}" for d in docs]
    expected = library_scores(reranker, QUERY, texts)
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=TOL)
        assert r["document"] == docs[r["index"]]  # object documents come back as sent


def test_raw_scores_add_the_logit(client: httpx.Client, reranker: Reranker) -> None:
    body = rerank(client, {"query": QUERY, "documents": DOCS, "raw_scores": True})
    logits = library_scores(reranker, QUERY, DOCS, normalize=False)
    for r in body["results"]:
        assert r["raw_score"] == pytest.approx(logits[r["index"]], abs=TOL)
        assert sigmoid(r["raw_score"]) == pytest.approx(r["relevance_score"], abs=1e-6)


def test_no_raw_score_unless_asked(client: httpx.Client) -> None:
    body = rerank(client, {"query": QUERY, "documents": DOCS})
    assert all("raw_score" not in r for r in body["results"])


def test_unknown_fields_are_accepted_and_ignored(client: httpx.Client) -> None:
    plain = rerank(client, {"query": QUERY, "documents": DOCS})
    extra = rerank(
        client,
        {
            "query": QUERY,
            "documents": DOCS,
            "max_chunks_per_doc": 10,
            "priority": 5,
            "relevant_spans": {"mode": "auto"},
            "foo": [1, {"bar": None}],
        },
    )
    strip = lambda b: [(r["index"], r["relevance_score"]) for r in b["results"]]  # noqa: E731
    assert strip(extra) == strip(plain)


def test_response_ids_are_unique(client: httpx.Client) -> None:
    ids = {rerank(client, {"query": QUERY, "documents": DOCS[:1]})["id"] for _ in range(3)}
    assert len(ids) == 3


def test_vllm_rerank_body_with_truncate_prompt_tokens(client: httpx.Client, xlmr_dir: Path) -> None:
    body = rerank(
        client,
        {
            "model": "BAAI/bge-reranker-v2-m3",
            "query": QUERY,
            "documents": [LONG_EN, DOCS[0]],
            "top_n": 2,
            "truncate_prompt_tokens": 64,
        },
        "/v1/rerank",
    )
    assert_rerank_shape(body, 2)
    by_index = {r["index"]: r for r in body["results"]}
    assert by_index[0]["truncated"] is True
    assert by_index[1]["truncated"] is False
    short = Reranker(str(xlmr_dir), device="cpu", dtype="fp32", max_length=64)
    expected = library_scores(short, QUERY, [LONG_EN, DOCS[0]])
    for i, r in by_index.items():
        assert r["relevance_score"] == pytest.approx(expected[i], abs=TOL)
    assert body["usage"]["total_tokens"] <= 64 + 64


def test_truncate_prompt_tokens_minus_one_means_model_limit(client: httpx.Client) -> None:
    plain = rerank(client, {"query": QUERY, "documents": [LONG_EN]})
    minus_one = rerank(client, {"query": QUERY, "documents": [LONG_EN], "truncate_prompt_tokens": -1})
    assert minus_one["usage"] == plain["usage"]
    assert minus_one["results"][0]["relevance_score"] == pytest.approx(plain["results"][0]["relevance_score"], abs=1e-6)


# --- TEI ---------------------------------------------------------------------------------------


def test_tei_texts_return_a_bare_sorted_array(client: httpx.Client, reranker: Reranker) -> None:
    response = client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert isinstance(ranks, list) and len(ranks) == len(DOCS)
    assert [set(r) for r in ranks] == [{"index", "score"}] * len(DOCS)
    scores = [r["score"] for r in ranks]
    assert scores == sorted(scores, reverse=True)
    expected = library_scores(reranker, QUERY, DOCS)
    for r in ranks:
        assert r["score"] == pytest.approx(expected[r["index"]], abs=TOL)


def test_tei_raw_scores_are_logits_and_return_text_adds_text(client: httpx.Client, reranker: Reranker) -> None:
    ranks = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True}).json()
    logits = library_scores(reranker, QUERY, DOCS, normalize=False)
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    for r in ranks:
        assert r["score"] == pytest.approx(logits[r["index"]], abs=TOL)
        assert r["text"] == DOCS[r["index"]]


def test_tei_truncate_false_with_too_long_text_is_413(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": QUERY, "texts": [DOCS[0], LONG_EN], "truncate": False})
    message = assert_tei_error_body(response, 413)
    assert "512" in message


def test_tei_missing_truncate_follows_server_truncation(client: httpx.Client, reranker: Reranker) -> None:
    # The default server truncates; see test_server_errors for the --truncation error server.
    ranks = client.post("/rerank", json={"query": QUERY, "texts": [DOCS[0], LONG_EN]}).json()
    expected = library_scores(reranker, QUERY, [DOCS[0], LONG_EN])
    assert {r["index"]: r["score"] for r in ranks} == pytest.approx(dict(enumerate(expected)), abs=TOL)
    truncate_true = client.post("/rerank", json={"query": QUERY, "texts": [DOCS[0], LONG_EN], "truncate": True})
    assert truncate_true.json() == ranks


def test_tei_empty_query_is_a_tei_error(client: httpx.Client) -> None:
    assert_tei_error_body(client.post("/rerank", json={"query": "  ", "texts": DOCS}), 400)


def test_tei_wrong_types_are_422_in_tei_shape(client: httpx.Client) -> None:
    message = assert_tei_error_body(client.post("/rerank", json={"query": QUERY, "texts": [1, {"a": 2}]}), 422)
    assert "texts" in message
    message = assert_tei_error_body(client.post("/rerank", json={"query": QUERY, "texts": "one string"}), 422)
    assert "texts" in message


# --- vLLM /score -----------------------------------------------------------------------------


def assert_score_shape(body: dict, n: int) -> None:
    assert body["id"] and body["object"] == "list"
    assert isinstance(body["created"], int) and body["created"] > 1_600_000_000
    assert isinstance(body["model"], str)
    assert [d["index"] for d in body["data"]] == list(range(n))
    assert all(d["object"] == "score" and 0.0 <= d["score"] <= 1.0 for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_score_one_to_many(client: httpx.Client, reranker: Reranker, path: str) -> None:
    response = client.post(path, json={"model": "m", "text_1": QUERY, "text_2": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_score_shape(body, len(DOCS))
    expected = library_scores(reranker, QUERY, DOCS)
    assert [d["score"] for d in body["data"]] == pytest.approx(expected, abs=TOL)


def test_score_pair_by_pair(client: httpx.Client, reranker: Reranker) -> None:
    queries = [q for q, _ in PAIRS]
    docs = [d for _, d in PAIRS]
    response = client.post("/v1/score", json={"text_1": queries, "text_2": docs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_score_shape(body, len(PAIRS))
    assert [d["score"] for d in body["data"]] == pytest.approx(reranker.compute_score(PAIRS), abs=TOL)


def test_score_one_to_one_strings(client: httpx.Client, reranker: Reranker) -> None:
    body = client.post("/score", json={"text_1": QUERY, "text_2": DOCS[0]}).json()
    assert_score_shape(body, 1)
    assert body["data"][0]["score"] == pytest.approx(reranker.compute_score([(QUERY, DOCS[0])])[0], abs=TOL)


def test_score_single_item_list_broadcasts(client: httpx.Client) -> None:
    one = client.post("/score", json={"text_1": [QUERY], "text_2": DOCS}).json()
    many = client.post("/score", json={"text_1": QUERY, "text_2": DOCS}).json()
    assert [d["score"] for d in one["data"]] == [d["score"] for d in many["data"]]


def test_score_mismatched_lengths_are_400(client: httpx.Client) -> None:
    response = client.post("/score", json={"text_1": ["a", "b"], "text_2": ["a", "b", "c"]})
    message = assert_error_body(response, 400)
    assert "2" in message and "3" in message


# --- Exactness -------------------------------------------------------------------------------


def test_http_scores_equal_library_scores(client: httpx.Client, reranker: Reranker) -> None:
    expected = reranker.compute_score(PAIRS)
    for (query, doc), want in zip(PAIRS, expected, strict=True):
        body = rerank(client, {"query": query, "documents": [doc]})
        assert body["results"][0]["relevance_score"] == pytest.approx(want, abs=TOL), (query, doc[:40])


def test_http_scores_equal_library_for_chinese_and_long_documents(client: httpx.Client, reranker: Reranker) -> None:
    docs = ["大熊猫的食物中百分之九十九是竹子。", LONG_ZH, LONG_EN, "熊猫电子是一家中国电子企业。"]
    body = rerank(client, {"query": "大熊猫主要吃什么？", "documents": docs, "raw_scores": True})
    expected = library_scores(reranker, "大熊猫主要吃什么？", docs, normalize=False)
    for r in body["results"]:
        assert r["raw_score"] == pytest.approx(expected[r["index"]], abs=TOL)
        assert r["truncated"] is (docs[r["index"]] in (LONG_ZH, LONG_EN))


def test_concurrent_requests_score_like_sequential_ones(default_server: ServerProcess, reranker: Reranker) -> None:
    requests = [
        {"query": q, "documents": [d, *DOCS[(i % 5) :], LONG_EN if i % 3 == 0 else "short"], "raw_scores": True}
        for i, (q, d) in enumerate(PAIRS * 2)
    ][:16]

    def send(body: dict) -> dict[int, tuple[float, float]]:
        with default_server.client() as c:
            result = rerank(c, body)
        return {r["index"]: (r["relevance_score"], r["raw_score"]) for r in result["results"]}

    sequential = [send(b) for b in requests]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(send, requests))
    for body, seq, conc in zip(requests, sequential, concurrent, strict=True):
        assert seq.keys() == conc.keys()
        for i in seq:
            # Padding next to other requests' longer pairs moves fp32 results a little: the library itself
            # gives a pair up to ~4e-6 (logit) / ~1e-6 (score) apart alone vs. beside a 512-token pair.
            assert conc[i][0] == pytest.approx(seq[i][0], abs=5e-6)
            assert conc[i][1] == pytest.approx(seq[i][1], abs=2e-5)
        expected = library_scores(reranker, body["query"], body["documents"])
        assert [conc[i][0] for i in range(len(expected))] == pytest.approx(expected, abs=TOL)


# --- Long inputs -----------------------------------------------------------------------------


def test_default_truncation_flags_truncated_documents(client: httpx.Client) -> None:
    docs = [DOCS[0], LONG_EN, DOCS[1], LONG_ZH]
    body = rerank(client, {"query": QUERY, "documents": docs})
    flags = {r["index"]: r["truncated"] for r in body["results"]}
    assert flags == {0: False, 1: True, 2: False, 3: True}
    warnings = body["meta"]["warnings"]
    assert len(warnings) == 1
    assert "2 document(s)" in warnings[0] and "512" in warnings[0] and "1, 3" in warnings[0]


def test_no_warnings_without_truncation(client: httpx.Client) -> None:
    body = rerank(client, {"query": QUERY, "documents": DOCS})
    assert "warnings" not in body["meta"] or not body["meta"]["warnings"]
    assert not any(r["truncated"] for r in body["results"])


def test_max_tokens_per_doc_caps_each_document(client: httpx.Client, reranker: Reranker, xlmr_dir: Path) -> None:
    cap = 20
    docs = [LONG_EN, DOCS[2], LONG_ZH]  # DOCS[2] has 14 tokens
    full = rerank(client, {"query": QUERY, "documents": docs})
    cut = rerank(client, {"query": QUERY, "documents": docs, "max_tokens_per_doc": cap, "raw_scores": True})
    assert cut["usage"]["total_tokens"] < full["usage"]["total_tokens"]
    flags = {r["index"]: r["truncated"] for r in cut["results"]}
    assert flags == {0: True, 1: False, 2: True}
    # The library cuts the document to exactly `cap` tokens when max_length = query + specials + cap.
    query_tokens = len(reranker.encoder.token_ids([QUERY])[0])
    special = reranker.encoder.template.num_special_tokens
    capped = Reranker(str(xlmr_dir), device="cpu", dtype="fp32", max_length=query_tokens + special + cap)
    expected = library_scores(capped, QUERY, docs, normalize=False)
    for r in cut["results"]:
        assert r["raw_score"] == pytest.approx(expected[r["index"]], abs=TOL)
    assert cut["usage"]["total_tokens"] == sum(
        query_tokens + special + min(cap, len(ids)) for ids in reranker.encoder.token_ids(docs)
    )


def test_truncate_prompt_tokens_caps_pairs_on_score(client: httpx.Client, xlmr_dir: Path) -> None:
    response = client.post("/score", json={"text_1": QUERY, "text_2": [LONG_EN, LONG_ZH], "truncate_prompt_tokens": 48})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["total_tokens"] == 2 * 48
    short = Reranker(str(xlmr_dir), device="cpu", dtype="fp32", max_length=48)
    expected = library_scores(short, QUERY, [LONG_EN, LONG_ZH])
    assert [d["score"] for d in body["data"]] == pytest.approx(expected, abs=TOL)
