"""min_score in every rerank dialect, the server's --min-score default, and --calibration per model."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from server_harness import DOCS, QUERY, ServerProcess, assert_error_body

from rerankd import Reranker
from rerankd.cli.main import cli
from rerankd.engine.calibration import Calibration

TOL = 1e-5
CALIBRATION = Calibration(2.0, -0.5, "test")


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def logits(reranker: Reranker) -> list[float]:
    return reranker.compute_score([(QUERY, d) for d in DOCS], normalize=False)


def threshold_between(scores: list[float], kept: int) -> float:
    """A min_score that keeps exactly the best `kept` of `scores`."""
    ranked = sorted(scores, reverse=True)
    return (ranked[kept - 1] + ranked[kept]) / 2


# Each rerank dialect: its path, its body, and how to read (index, relevance) pairs from its answer.
DIALECTS = {
    "cohere-v1": ("/v1/rerank", {"documents": DOCS, "return_documents": True}),
    "cohere-v2": ("/v2/rerank", {"documents": DOCS, "model": "rerank-v3.5"}),
    "jina": ("/rerank", {"documents": [{"text": d} for d in DOCS], "model": "jina-reranker-v2-base-multilingual"}),
    "vllm": ("/v1/rerank", {"documents": DOCS, "raw_scores": True}),
    "tei": ("/rerank", {"texts": DOCS}),
    "tei-raw": ("/rerank", {"texts": DOCS, "raw_scores": True}),
}


def returned_indices(body: dict | list) -> list[int]:
    return [r["index"] for r in (body if isinstance(body, list) else body["results"])]


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_min_score_drops_results_below_it_in_every_dialect(client: httpx.Client, logits, dialect: str) -> None:
    path, extra = DIALECTS[dialect]
    scores = [sigmoid(x) for x in logits]
    min_score = threshold_between(scores, kept=2)
    response = client.post(path, json={"query": QUERY, "min_score": min_score, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    best_two = sorted(range(len(DOCS)), key=lambda i: -scores[i])[:2]
    assert returned_indices(body) == best_two
    assert response.headers["x-below-min-score"] == str(len(DOCS) - 2)
    if dialect.startswith("tei"):  # a bare array: the header is the only place for the count
        values = [r["score"] for r in body]
        expected = [logits[i] if dialect == "tei-raw" else scores[i] for i in best_two]
        assert values == pytest.approx(expected, abs=TOL)  # raw scores still filtered on the sigmoid
    else:
        assert body["meta"]["below_min_score"] == len(DOCS) - 2
        assert all(r["relevance_score"] >= min_score for r in body["results"])


def test_min_score_applies_after_top_n(client: httpx.Client, logits) -> None:
    scores = [sigmoid(x) for x in logits]
    min_score = threshold_between(scores, kept=1)
    body = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 3, "min_score": min_score}).json()
    assert returned_indices(body) == [max(range(len(DOCS)), key=lambda i: scores[i])]
    assert body["meta"]["below_min_score"] == 2  # of the 3 that top_n kept


def test_without_min_score_nothing_is_dropped_or_reported(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert len(response.json()["results"]) == len(DOCS)
    assert "below_min_score" not in response.json()["meta"] and "x-below-min-score" not in response.headers


def test_vllm_score_is_index_aligned_and_ignores_min_score(client: httpx.Client) -> None:
    body = client.post("/score", json={"text_1": QUERY, "text_2": DOCS, "min_score": 0.99}).json()
    assert [d["index"] for d in body["data"]] == list(range(len(DOCS)))


@pytest.mark.parametrize("value", [-0.1, 1.5, "high"])
def test_min_score_outside_0_to_1_is_a_422(client: httpx.Client, value: object) -> None:
    message = assert_error_body(client.post("/rerank", json={"query": QUERY, "documents": DOCS, "min_score": value}),
                                422)
    assert "min_score" in message


# --- a server with a calibration and a default min_score -----------------------------------------


@pytest.fixture(scope="module")
def calibrated(start_module_server, xlmr_dir: Path, tmp_path_factory, logits) -> tuple[ServerProcess, float]:
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    path.write_text(CALIBRATION.to_json(model="tiny"), encoding="utf-8")
    relevance = CALIBRATION.relevance(logits).tolist()
    default = threshold_between(relevance, kept=3)
    server = start_module_server([f"tiny={xlmr_dir}"], ["--calibration", f"tiny={path}", "--min-score", str(default)])
    return server, default


def test_calibrated_relevance_with_raw_logits_and_the_default_min_score(calibrated, logits) -> None:
    server, _ = calibrated
    relevance = CALIBRATION.relevance(logits).tolist()
    with server.client() as client:
        body = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "raw_scores": True}).json()
        assert len(body["results"]) == 3 and body["meta"]["below_min_score"] == len(DOCS) - 3
        for r in body["results"]:
            assert r["relevance_score"] == pytest.approx(relevance[r["index"]], abs=TOL)
            assert r["raw_score"] == pytest.approx(logits[r["index"]], abs=TOL)
        # A request's own min_score wins over the server's.
        everything = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "min_score": 0}).json()
        assert len(everything["results"]) == len(DOCS) and everything["meta"]["below_min_score"] == 0
        scores = client.post("/score", json={"text_1": QUERY, "text_2": DOCS}).json()
        assert [d["score"] for d in scores["data"]] == pytest.approx(relevance, abs=TOL)
        assert client.get("/info").json()["models"][0]["calibration"].endswith("calibration.json")
        # A chunked document's windows are on the calibrated scale too, like its relevance_score.
        chunked = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "min_score": 0, "truncation": "chunk",
                                               "return_chunk_scores": True}).json()
        for r in chunked["results"]:
            best = max(r["chunk_scores"], key=lambda w: w["raw_score"])
            assert best["score"] == pytest.approx(r["relevance_score"], abs=TOL)
            assert best["score"] == pytest.approx(CALIBRATION.relevance(best["raw_score"]), abs=TOL)


def test_a_bad_calibration_stops_serve_before_loading(xlmr_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "bad.json").write_text('{"a": 1}')
    for args, message in [
        (["--calibration", str(tmp_path / "bad.json")], "is not a rerankd calibration"),
        (["--calibration", str(tmp_path / "missing.json")], "can't be read"),
        (["--model", f"a={xlmr_dir}", "--model", f"b={xlmr_dir}", "--calibration", str(tmp_path / "bad.json")],
         "expected NAME=FILE"),
    ]:
        result = runner.invoke(cli, ["serve", *(args if "--model" in args else ["--model", str(xlmr_dir), *args])])
        assert result.exit_code == 1 and message in result.output, result.output
