"""`rerankd serve` on an ONNX export answers with the torch model's scores."""

from __future__ import annotations

import pytest
from server_harness import DOCS, QUERY

from rerankd import Settings
from rerankd.export import export_onnx


def test_serving_an_onnx_export_matches_the_torch_library(start_server, xlmr_dir, reranker, tmp_path):
    onnx_dir = export_onnx(Settings(model=str(xlmr_dir)), tmp_path / "onnx").path
    server = start_server([onnx_dir])
    with server.client() as client:
        info = client.get("/info").json()
        response = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert response.status_code == 200, response.text
    expected = reranker.compute_score([(QUERY, d) for d in DOCS])
    for result in response.json()["results"]:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=1e-5)
    assert info["models"][0]["backend"] == "onnx" and info["models"][0]["dtype"] == "fp32"
