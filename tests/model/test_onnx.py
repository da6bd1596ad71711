"""ONNX export and the ONNX Runtime backend: same scores as torch, head kept, clear errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import PAIRS

from rerankd import RerankdError, Reranker, Settings
from rerankd.cli.main import cli
from rerankd.model import load_model
from rerankd.model.export import export_onnx


@pytest.fixture(scope="module")
def onnx_dirs(xlmr_dir, bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return {
        "xlm-roberta": export_onnx(Settings(model=str(xlmr_dir)), out / "xlmr").path,
        "bert": export_onnx(Settings(model=str(bert_dir)), out / "bert").path,
    }


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_onnx_scores_equal_torch_within_1e_4(arch, onnx_dirs, reranker, bert_reranker):
    torch_reranker = reranker if arch == "xlm-roberta" else bert_reranker
    onnx = Reranker(str(onnx_dirs[arch]), backend="onnx")
    assert onnx.scorer.backend.name == "onnx"
    expected = torch_reranker.compute_score(PAIRS, normalize=False)
    got = onnx.compute_score(PAIRS, normalize=False)
    assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-4
    assert max(got) - min(got) > 0.5  # the trained head is there: scores spread, not a bare encoder


def test_auto_picks_onnx_for_an_export_and_torch_otherwise(onnx_dirs, xlmr_dir):
    assert load_model(Settings(model=str(onnx_dirs["xlm-roberta"]))).backend == "onnx"
    assert load_model(Settings(model=str(xlmr_dir))).backend == "torch"


def test_onnx_backend_without_an_export_says_how_to_make_one(xlmr_dir):
    with pytest.raises(RerankdError, match="rerankd export --model"):
        load_model(Settings(model=str(xlmr_dir), backend="onnx"))


def test_onnx_backend_refuses_a_half_precision_request(onnx_dirs):
    with pytest.raises(RerankdError, match="exported fp32 graph"):
        load_model(Settings(model=str(onnx_dirs["bert"]), backend="onnx", dtype="fp16"))


def test_export_command_reports_the_parity_it_checked(xlmr_dir, tmp_path):
    result = CliRunner().invoke(cli, ["export", "--model", str(xlmr_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert "max |logit difference| vs torch" in result.stdout
    assert (tmp_path / "x" / "model.onnx").is_file() and (tmp_path / "x" / "tokenizer.json").is_file()
