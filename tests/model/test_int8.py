"""INT8: torch dynamic quantisation and ONNX INT8 exports, both behind the rank-correlation quality gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import PAIRS

from rerankd import RerankdError, Reranker, Settings
from rerankd.cli.main import cli
from rerankd.export import export_onnx
from rerankd.model import load_model
from rerankd.model.quality import MIN_SPEARMAN, reference_pairs, spearman
from rerankd.model.quantize import bitsandbytes_8bit
from rerankd.testing import make_test_model


@pytest.fixture(scope="module")
def outlier_dir(tmp_path_factory):
    """A tiny model with outlier weight channels: fine in fp32, constant scores in INT8."""
    return make_test_model(tmp_path_factory.mktemp("outliers"), shape="tiny", int8_outliers=True)


def test_spearman_ranks_ties_by_their_average():
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9486833)
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert spearman(np.arange(5.0), np.zeros(5)) == 0.0  # a constant output ranks nothing


def test_reference_pairs_are_fixed_and_bilingual():
    pairs = reference_pairs()
    assert len(pairs) == 36 and pairs == reference_pairs()
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in doc) for _, doc in pairs)


def test_torch_int8_ranks_like_fp32(xlmr_dir, reranker):
    int8 = Reranker(str(xlmr_dir), device="cpu", dtype="int8")
    assert int8.loaded.dtype == "int8"
    expected = reranker.compute_score(PAIRS, normalize=False)
    got = int8.compute_score(PAIRS, normalize=False)
    assert got != expected  # really quantised
    assert spearman(np.array(got), np.array(expected)) >= MIN_SPEARMAN


def test_torch_int8_refuses_a_model_that_quantises_badly(outlier_dir):
    assert Reranker(str(outlier_dir), device="cpu").compute_score(PAIRS)  # fp32 is fine
    with pytest.raises(RerankdError, match=r"ranks unlike the fp32 model: Spearman 0\.0000"):
        load_model(Settings(model=str(outlier_dir), device="cpu", dtype="int8"))


def test_onnx_int8_export_passes_the_gate_and_serves(xlmr_dir, tmp_path, reranker):
    result = CliRunner().invoke(cli, ["export", "--model", str(xlmr_dir), "--out", str(tmp_path / "q"),
                                      "--quantize", "int8", "--optimize", "1"])
    assert result.exit_code == 0, result.output
    assert "int8" in result.stdout and "Spearman vs fp32" in result.stdout
    info = json.loads((tmp_path / "q" / "rerankd_export.json").read_text())
    assert info["dtype"] == "int8" and info["spearman"] >= MIN_SPEARMAN
    onnx = Reranker(str(tmp_path / "q"))
    assert (onnx.scorer.backend.name, onnx.loaded.dtype) == ("onnx", "int8")
    got = onnx.compute_score(PAIRS, normalize=False)
    assert spearman(np.array(got), np.array(reranker.compute_score(PAIRS, normalize=False))) >= MIN_SPEARMAN
    with pytest.raises(RerankdError, match="is an int8 ONNX export"):
        load_model(Settings(model=str(tmp_path / "q"), dtype="fp32"))


def test_onnx_int8_export_of_a_bad_model_is_refused_unless_forced(outlier_dir, tmp_path):
    refused = CliRunner().invoke(cli, ["export", "--model", str(outlier_dir), "--out", str(tmp_path / "q"),
                                       "--quantize", "int8"])
    assert refused.exit_code != 0
    assert "ranks unlike the fp32 model" in refused.output and "--force" in refused.output
    assert not (tmp_path / "q").exists()  # refused before anything was written

    report = export_onnx(Settings(model=str(outlier_dir)), tmp_path / "q", quantize="int8", force=True)
    assert report.info.spearman is not None and report.info.spearman < MIN_SPEARMAN
    assert (tmp_path / "q" / "model.onnx").is_file()


def test_int8_where_it_cannot_run_is_a_clear_error(xlmr_dir):
    with pytest.raises(RerankdError, match="no CUDA GPU"):
        load_model(Settings(model=str(xlmr_dir), device="cuda", dtype="int8"))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(RerankdError, match="pip install bitsandbytes"):
            bitsandbytes_8bit()
