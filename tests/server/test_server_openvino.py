"""`rerankd serve` with OpenVINO: an OpenVINO export, and `--backend auto` measuring three backends, both answer
with the torch model's scores, and /info says which backend runs and what auto measured."""

from __future__ import annotations

import shutil

import pytest
from server_harness import DOCS, QUERY

from rerankd import Settings
from rerankd.export import export_onnx, export_openvino

pytest.importorskip("openvino")


def test_serving_openvino_and_auto_match_the_torch_library(start_server, xlmr_dir, bert_dir, reranker,
                                                           bert_reranker, tmp_path):
    openvino_dir = export_openvino(Settings(model=str(bert_dir)), tmp_path / "openvino").path
    every_format = tmp_path / "every-format"
    shutil.copytree(xlmr_dir, every_format)
    export_onnx(Settings(model=str(xlmr_dir)), every_format)
    export_openvino(Settings(model=str(xlmr_dir)), every_format)
    server = start_server([f"bert={openvino_dir}", f"xlmr={every_format}"])
    with server.client() as client:
        info = {m["name"]: m for m in client.get("/info").json()["models"]}
        responses = {name: client.post("/v1/rerank", json={"model": name, "query": QUERY, "documents": DOCS})
                     for name in ("bert", "xlmr")}
    assert (info["bert"]["backend"], info["bert"]["dtype"], info["bert"]["backend_timings"]) == (
        "openvino", "fp32", None)  # the only backend that can run an export without torch weights: nothing measured
    timings = info["xlmr"]["backend_timings"]
    assert set(timings) == {"torch", "onnx", "openvino"}
    assert info["xlmr"]["backend"] == min(timings, key=timings.get)
    for name, library in (("bert", bert_reranker), ("xlmr", reranker)):
        assert responses[name].status_code == 200, responses[name].text
        expected = library.compute_score([(QUERY, d) for d in DOCS])
        for result in responses[name].json()["results"]:
            assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=1e-5)
