"""LLM rerankers over real HTTP: every dialect, the per-request instruction, the cache, /info and /v1/models."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_harness import DOCS, QUERY, ServerProcess, assert_error_body

from rerankd import Reranker
from rerankd.testing import make_causal_test_model

TOL = 1e-5
MAX_LENGTH = "256"
INSTRUCTION = "Given a question, find the passage that answers it"


@pytest.fixture(scope="module")
def llm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {arch: make_causal_test_model(tmp_path_factory.mktemp(arch), shape="tiny", arch=arch)
            for arch in ("qwen3", "gemma")}


@pytest.fixture(scope="module")
def server(start_module_server, llm_dirs, xlmr_dir) -> ServerProcess:
    models = [f"qwen3={llm_dirs['qwen3']}", f"gemma={llm_dirs['gemma']}", f"xlmr={xlmr_dir}"]
    # The cache on, so that the test sees the instruction is part of its key.
    return start_module_server(models, ["--max-length", MAX_LENGTH], env={"RERANKD_NO_CACHE": "0"})


@pytest.fixture(scope="module")
def libraries(llm_dirs) -> dict[str, Reranker]:
    return {name: Reranker(str(path), device="cpu", max_length=int(MAX_LENGTH)) for name, path in llm_dirs.items()}


@pytest.mark.parametrize("name", ["qwen3", "gemma"])
def test_every_dialect_scores_like_the_library(server, libraries, name):
    library = libraries[name]
    expected = library.compute_score([(QUERY, d) for d in DOCS])
    logits = library.compute_score([(QUERY, d) for d in DOCS], normalize=False)
    with server.client() as c:
        for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
            body = c.post(path, json={"model": name, "query": QUERY, "documents": DOCS, "raw_scores": True}).json()
            for r in body["results"]:
                assert abs(r["relevance_score"] - expected[r["index"]]) < TOL
                assert abs(r["raw_score"] - logits[r["index"]]) < TOL
        tei = c.post("/rerank", json={"model": name, "query": QUERY, "texts": DOCS}).json()
        assert all(abs(r["score"] - expected[r["index"]]) < TOL for r in tei)
        scored = c.post("/score", json={"model": name, "text_1": QUERY, "text_2": DOCS}).json()
        assert [round(d["score"], 5) for d in scored["data"]] == [round(s, 5) for s in expected]


@pytest.mark.parametrize("name", ["qwen3", "gemma"])
def test_the_instruction_reaches_the_model_and_the_cache_key(server, libraries, name):
    expected = libraries[name].compute_score([(QUERY, d) for d in DOCS], instruction=INSTRUCTION)
    with server.client() as c:
        plain = c.post("/rerank", json={"model": name, "query": QUERY, "documents": DOCS}).json()
        for _ in range(2):  # the second answer comes from the cache, under the instruction's own key
            response = c.post("/rerank", json={"model": name, "query": QUERY, "documents": DOCS,
                                               "instruction": INSTRUCTION})
            by_index = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
            assert max(abs(by_index[i] - s) for i, s in enumerate(expected)) < TOL
        assert response.headers["x-cache-hits"] == str(len(DOCS))
        assert by_index != {r["index"]: r["relevance_score"] for r in plain["results"]}
        scored = c.post("/score", json={"model": name, "text_1": QUERY, "text_2": DOCS,
                                        "instruction": INSTRUCTION}).json()
        assert max(abs(d["score"] - s) for d, s in zip(scored["data"], expected)) < TOL


def test_a_cross_encoder_refuses_an_instruction(server):
    with server.client() as c:
        response = c.post("/rerank", json={"model": "xlmr", "query": QUERY, "documents": DOCS,
                                           "instruction": INSTRUCTION})
    assert "takes no instruction" in assert_error_body(response, 400)


def test_info_and_model_list_report_the_kind(server):
    with server.client() as c:
        info = c.get("/info").json()
        listed = c.get("/v1/models").json()
    kinds = {"qwen3": "qwen3-reranker", "gemma": "flag-llm-reranker", "xlmr": "cross-encoder"}
    assert {m["name"]: m["kind"] for m in info["models"]} == kinds
    assert {m["id"]: m["kind"] for m in listed["data"]} == kinds
    assert all(m["max_model_len"] == int(MAX_LENGTH) for m in listed["data"])


@pytest.mark.parametrize("name", ["qwen3", "gemma"])
def test_chunk_scores_windows_with_the_instruction(server, name):
    long = " ".join(f"Giant pandas eat bamboo shoots, report {i} says, and rest in the forest." for i in range(20))
    with server.client() as c:
        chunked = c.post("/rerank", json={"model": name, "query": QUERY, "documents": [long],
                                          "truncation": "chunk", "instruction": INSTRUCTION, "raw_scores": True})
        assert chunked.status_code == 200, chunked.text
        (result,) = chunked.json()["results"]
        assert result["chunks"] > 1 and not result["truncated"]
        window = long[result["highlight"]["start"]:result["highlight"]["end"]]
        alone = c.post("/rerank", json={"model": name, "query": QUERY, "documents": [window], "truncation": "error",
                                        "instruction": INSTRUCTION, "raw_scores": True}).json()["results"][0]
    assert abs(alone["raw_score"] - result["raw_score"]) < TOL


def test_an_llm_kind_refuses_tei_left_truncation(server):
    with server.client() as c:
        response = c.post("/rerank", json={"model": "qwen3", "query": QUERY, "texts": DOCS,
                                           "truncation_direction": "Left"})
    assert response.status_code == 400, response.text
    assert "qwen3-reranker" in response.json()["error"]  # TEI's error shape
