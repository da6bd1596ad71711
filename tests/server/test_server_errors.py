"""Limits and errors over real HTTP: every error is JSON with `message`, `detail` and `error {message,type,code}`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_harness import (
    DOCS,
    LONG_EN,
    QUERY,
    ServerProcess,
    assert_error_body,
    assert_tei_error_body,
    slow_documents,
    wait_until,
)

from rerankd import Reranker

MAX_DOCUMENTS = 6
MAX_QUEUED_PAIRS = 4
MAX_DOCUMENT_CHARS = 2000
MAX_BODY_BYTES = 16384
# Under MAX_DOCUMENT_CHARS but well over 512 tokens.
LONGISH = LONG_EN[:1500]


@pytest.fixture(scope="module")
def limited(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    """Small limits, truncation off and a strict model name, all on one server."""
    return start_module_server(
        [f"limited={xlmr_dir}"],
        [
            "--max-documents",
            str(MAX_DOCUMENTS),
            "--max-queued-pairs",
            str(MAX_QUEUED_PAIRS),
            "--max-document-chars",
            str(MAX_DOCUMENT_CHARS),
            "--max-body-bytes",
            str(MAX_BODY_BYTES),
            "--truncation",
            "error",
            "--strict-model-name",
        ],
    )


@pytest.fixture
def lc(limited: ServerProcess) -> Iterator[httpx.Client]:
    with limited.client() as c:
        yield c


@pytest.fixture(scope="module")
def impatient(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_module_server([xlmr_dir], ["--request-timeout", "0.001"])


@pytest.fixture(scope="module")
def two_models(start_module_server, xlmr_dir: Path, bert_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_module_server([f"a={xlmr_dir}", f"b={bert_dir}"])


# --- malformed requests on the default server ------------------------------------------------


def test_malformed_json_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/rerank", content=b'{"query": "q", "documents": [', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_error_body(response, 422)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": QUERY, "documents": DOCS, "top_n": "abc"}, "top_n"),
        ({"query": QUERY, "documents": "not a list"}, "documents"),
        ({"query": 5, "documents": DOCS}, "query"),
        ({"documents": DOCS}, "query"),
        ({"query": QUERY, "documents": DOCS, "top_n": -1}, "top_n"),
        ({"query": QUERY, "documents": DOCS, "return_documents": "maybe"}, "return_documents"),
        ({"query": QUERY, "documents": DOCS, "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
        ({"query": QUERY, "documents": [{"title": "no text"}]}, "documents.0"),
        ({"query": QUERY, "documents": [{"title": "t"}], "rank_fields": ["title", "body"]}, "documents.0"),
    ],
)
def test_wrong_types_are_422_naming_the_field(client: httpx.Client, body: dict, field: str) -> None:
    message = assert_error_body(client.post("/rerank", json=body), 422)
    assert field in message


def test_neither_documents_nor_texts_is_422(client: httpx.Client) -> None:
    message = assert_error_body(client.post("/rerank", json={"query": QUERY}), 422)
    assert "documents" in message


def test_score_wrong_types_are_422_naming_the_field(client: httpx.Client) -> None:
    message = assert_error_body(client.post("/score", json={"text_1": QUERY, "text_2": 7}), 422)
    assert "text_2" in message


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_400(client: httpx.Client, query: str) -> None:
    message = assert_error_body(client.post("/rerank", json={"query": query, "documents": DOCS}), 400)
    assert "query" in message


def test_empty_query_on_score_is_400(client: httpx.Client) -> None:
    assert_error_body(client.post("/score", json={"text_1": "", "text_2": DOCS}), 400)


def test_unknown_route_is_404_json(client: httpx.Client) -> None:
    assert_error_body(client.get("/no/such/route"), 404)
    assert_error_body(client.post("/v3/rerank", json={"query": QUERY, "documents": DOCS}), 404)


def test_wrong_method_is_405_json(client: httpx.Client) -> None:
    assert_error_body(client.get("/rerank"), 405)


def test_single_model_accepts_any_model_name(client: httpx.Client) -> None:
    for name in ("rerank-english-v3.0", "BAAI/bge-reranker-v2-m3", "whatever"):
        response = client.post("/rerank", json={"model": name, "query": QUERY, "documents": DOCS})
        assert response.status_code == 200, response.text


# --- limits --------------------------------------------------------------------------------------


def test_more_documents_than_max_documents_is_413(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"query": QUERY, "documents": ["d"] * (MAX_DOCUMENTS + 1)})
    message = assert_error_body(response, 413)
    assert str(MAX_DOCUMENTS) in message and "--max-documents" in message


def test_more_texts_than_max_documents_on_score_is_413(lc: httpx.Client) -> None:
    response = lc.post("/score", json={"text_1": QUERY, "text_2": ["d"] * (MAX_DOCUMENTS + 1)})
    assert str(MAX_DOCUMENTS) in assert_error_body(response, 413)


def test_more_texts_than_max_documents_on_tei_is_413(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"query": QUERY, "texts": ["d"] * (MAX_DOCUMENTS + 1)})
    assert str(MAX_DOCUMENTS) in assert_tei_error_body(response, 413)


def test_document_over_max_document_chars_is_413(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"query": QUERY, "documents": ["ok", "x" * (MAX_DOCUMENT_CHARS + 1)]})
    message = assert_error_body(response, 413)
    assert "documents[1]" in message and str(MAX_DOCUMENT_CHARS) in message
    # Exactly at the limit is fine (TEI's truncate: true, since this server does not truncate by default).
    ok = lc.post("/rerank", json={"query": QUERY, "texts": ["x" * MAX_DOCUMENT_CHARS], "truncate": True})
    assert ok.status_code == 200, ok.text


def test_query_over_max_document_chars_is_413(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"query": "q" * (MAX_DOCUMENT_CHARS + 1), "documents": ["d"]})
    assert "query" in assert_error_body(response, 413)


def test_body_over_max_body_bytes_is_413(limited: ServerProcess, lc: httpx.Client) -> None:
    key = ("rerankd_requests_total", (("route", "/v2/rerank"), ("status", "413")))
    before = limited.metrics().get(key, 0.0)
    body = b'{"query": "q", "documents": ["' + b"a" * MAX_BODY_BYTES + b'"]}'
    response = lc.post("/v2/rerank", content=body, headers={"content-type": "application/json"})
    message = assert_error_body(response, 413)
    assert str(MAX_BODY_BYTES) in message and "--max-body-bytes" in message
    # Refused on its Content-Length before routing, and still counted under the route it was for.
    wait_until(lambda: limited.metrics().get(key, 0.0) == before + 1, timeout=60, message="the 413 counted")


def test_chunked_body_over_max_body_bytes_is_413(lc: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "q", "documents": ["'
        for _ in range(8):
            yield b"a" * (MAX_BODY_BYTES // 4)
        yield b'"]}'

    response = lc.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
    message = assert_error_body(response, 413)
    assert str(MAX_BODY_BYTES) in message


def test_chunked_body_under_max_body_bytes_is_served(lc: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "q", '
        yield b'"documents": ["a", "b"]}'

    response = lc.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200, response.text


def test_more_pairs_than_the_queue_holds_is_413_saying_how_to_split(lc: httpx.Client) -> None:
    # An idle server refuses it too: it can never fit, so a retry would never help.
    response = lc.post("/rerank", json={"query": QUERY, "documents": DOCS[: MAX_QUEUED_PAIRS + 1]})
    message = assert_error_body(response, 413)
    assert "--max-queued-pairs" in message and f"at most {MAX_QUEUED_PAIRS} documents" in message
    assert "retry-after" not in response.headers
    ok = lc.post("/rerank", json={"query": QUERY, "documents": DOCS[:MAX_QUEUED_PAIRS]})
    assert ok.status_code == 200, ok.text


def test_413_for_too_many_pairs_on_score_and_tei_too(lc: httpx.Client) -> None:
    response = lc.post("/score", json={"text_1": QUERY, "text_2": DOCS[: MAX_QUEUED_PAIRS + 1]})
    assert "--max-queued-pairs" in assert_error_body(response, 413)
    response = lc.post("/rerank", json={"query": QUERY, "texts": DOCS[: MAX_QUEUED_PAIRS + 1]})
    assert "--max-queued-pairs" in assert_tei_error_body(response, 413)


# --- truncation off ------------------------------------------------------------------------------


def test_truncation_error_gives_token_count_and_limit(lc: httpx.Client, reranker: Reranker) -> None:
    response = lc.post("/rerank", json={"query": QUERY, "documents": ["short", LONGISH]})
    message = assert_error_body(response, 413)
    special = reranker.encoder.template.num_special_tokens
    q_ids, d_ids = reranker.encoder.token_ids([QUERY, LONGISH])
    full = len(q_ids) + len(d_ids) + special
    assert full > 512
    assert "documents[1]" in message
    assert f"{full} tokens" in message and "512" in message


def test_truncation_error_applies_to_score(lc: httpx.Client) -> None:
    response = lc.post("/score", json={"text_1": QUERY, "text_2": ["short", LONGISH]})
    assert "512" in assert_error_body(response, 413)


def test_truncation_error_lets_short_documents_through(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"query": QUERY, "documents": DOCS[:4]})
    assert response.status_code == 200, response.text
    assert not any(r["truncated"] for r in response.json()["results"])


def test_tei_missing_truncate_follows_server_truncation_error(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"query": QUERY, "texts": ["short", LONGISH]})
    assert "512" in assert_tei_error_body(response, 413)
    allowed = lc.post("/rerank", json={"query": QUERY, "texts": ["short", LONGISH], "truncate": True})
    assert allowed.status_code == 200, allowed.text
    assert len(allowed.json()) == 2


def test_truncation_error_respects_requested_max_tokens_per_doc(lc: httpx.Client) -> None:
    doc = "bamboo forest river " * 5  # about 40 tokens: far under 512
    response = lc.post("/rerank", json={"query": QUERY, "documents": [doc], "max_tokens_per_doc": 5})
    if response.status_code == 413:
        # If the server keeps refusing, the numbers it gives must at least say the pair is over the limit.
        numbers = re.search(r"pair of (\d+) tokens.*limit of (\d+) tokens", response.json()["message"])
        assert numbers is not None and int(numbers[1]) > int(numbers[2]), response.text
    else:
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["truncated"] is True


def test_truncation_error_message_is_right_about_a_long_query(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"query": "panda " * 150, "documents": ["bamboo"]})
    if response.status_code == 413:
        message = response.json()["message"]
        numbers = re.search(r"pair of (\d+) tokens.*limit of (\d+) tokens", message)
        if numbers is not None:
            assert int(numbers[1]) > int(numbers[2]), message
        else:
            assert "query" in message and "384" in message, message
    else:
        assert response.status_code == 200, response.text


# --- tiny truncate_prompt_tokens -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/rerank", "/score"])
def test_tiny_truncate_prompt_tokens_is_not_a_500(client: httpx.Client, path: str) -> None:
    body = (
        {"query": QUERY, "documents": [LONG_EN], "truncate_prompt_tokens": 2}
        if path == "/rerank"
        else {"text_1": QUERY, "text_2": [LONG_EN], "truncate_prompt_tokens": 2}
    )
    response = client.post(path, json=body)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 200:
        # The shortest pair there is: the special tokens, one query token, nothing of the document.
        assert response.json()["usage"]["total_tokens"] <= 5


def test_tiny_truncate_prompt_tokens_caps_the_pair(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": [DOCS[0]], "truncate_prompt_tokens": 3})
    if response.status_code == 200:
        assert response.json()["usage"]["total_tokens"] <= 5, response.text
    else:
        assert response.status_code in (400, 422), response.text


def test_truncate_prompt_tokens_at_the_smallest_pair(client: httpx.Client) -> None:
    # 5 = 4 special tokens + 1 query token: the smallest pair, and the document is all cut.
    response = client.post("/score", json={"text_1": QUERY, "text_2": [LONG_EN, DOCS[0]], "truncate_prompt_tokens": 5})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["total_tokens"] == 10


# --- model names ---------------------------------------------------------------------------------


def test_strict_model_name_rejects_unknown_names(lc: httpx.Client) -> None:
    response = lc.post("/rerank", json={"model": "rerank-english-v3.0", "query": QUERY, "documents": DOCS[:2]})
    message = assert_error_body(response, 404)
    assert "rerank-english-v3.0" in message and "limited" in message
    response = lc.post("/score", json={"model": "nope", "text_1": QUERY, "text_2": DOCS[:2]})
    assert_error_body(response, 404)


def test_strict_model_name_accepts_the_served_name_or_none(lc: httpx.Client) -> None:
    named = lc.post("/rerank", json={"model": "limited", "query": QUERY, "documents": DOCS[:2]})
    assert named.status_code == 200, named.text
    assert named.json()["model"] == "limited"
    unnamed = lc.post("/rerank", json={"query": QUERY, "documents": DOCS[:2]})
    assert unnamed.status_code == 200, unnamed.text


def test_model_field_picks_among_several_models(
    two_models: ServerProcess, reranker: Reranker, bert_reranker: Reranker
) -> None:
    with two_models.client() as c:
        for name, lib in (("a", reranker), ("b", bert_reranker)):
            body = c.post("/rerank", json={"model": name, "query": QUERY, "documents": DOCS}).json()
            assert body["model"] == name
            expected = lib.compute_score([(QUERY, d) for d in DOCS])
            for r in body["results"]:
                assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-5)
            score = c.post("/score", json={"model": name, "text_1": QUERY, "text_2": DOCS}).json()
            assert score["model"] == name
            assert [d["score"] for d in score["data"]] == pytest.approx(expected, abs=1e-5)
        # Different models give different scores, so the pick is real.
        a = c.post("/rerank", json={"model": "a", "query": QUERY, "documents": DOCS}).json()["results"]
        b = c.post("/rerank", json={"model": "b", "query": QUERY, "documents": DOCS}).json()["results"]
        assert [r["relevance_score"] for r in a] != [r["relevance_score"] for r in b]


def test_missing_model_field_uses_the_first_model(two_models: ServerProcess) -> None:
    with two_models.client() as c:
        assert c.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()["model"] == "a"


def test_unknown_model_among_several_is_404(two_models: ServerProcess) -> None:
    with two_models.client() as c:
        message = assert_error_body(c.post("/rerank", json={"model": "c", "query": QUERY, "documents": DOCS}), 404)
        assert "'c'" in message and "a" in message and "b" in message
        assert_error_body(c.post("/v1/score", json={"model": "c", "text_1": QUERY, "text_2": DOCS}), 404)
        assert_tei_error_body(c.post("/rerank", json={"model": "c", "query": QUERY, "texts": DOCS}), 404)


def test_models_endpoint_lists_every_model(two_models: ServerProcess) -> None:
    with two_models.client() as c:
        body = c.get("/v1/models").json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["a", "b"]
        assert all(m["object"] == "model" and m["max_model_len"] == 512 for m in body["data"])
        info = c.get("/info").json()
        assert [m["name"] for m in info["models"]] == ["a", "b"]
        assert {m["model_type"] for m in info["models"]} == {"xlm-roberta", "bert"}


# --- request timeout -----------------------------------------------------------------------------


def test_request_timeout_is_503(impatient: ServerProcess) -> None:
    with impatient.client() as c:
        response = c.post("/rerank", json={"query": QUERY, "documents": slow_documents(64)})
        message = assert_error_body(response, 503)
        assert "--request-timeout" in message
        assert "retry-after" in response.headers
        response = c.post("/score", json={"text_1": QUERY, "text_2": slow_documents(64)})
        assert_error_body(response, 503)
        # Still alive, and the timed-out pairs leave the queue.
        assert c.get("/health").status_code == 200
    wait_until(lambda: impatient.queue_pairs() == 0, timeout=60, message="queue gauge back to 0")


def test_request_timeout_in_tei_shape(impatient: ServerProcess) -> None:
    with impatient.client() as c:
        started = time.perf_counter()
        response = c.post("/rerank", json={"query": QUERY, "texts": slow_documents(64)})
        assert_tei_error_body(response, 503)
        assert time.perf_counter() - started < 60  # cut off, not run to the end (a generous bound: no timing claim)
