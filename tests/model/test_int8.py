"""INT8: torch dynamic quantisation and ONNX INT8 exports, both behind the rank-correlation quality gate.

The "passes" tests use the mini fixture (the MiniLM-L6 shape): its GEMMs are as deep as a real reranker's,
so it exercises the kernels and the saturation that a real model meets (on AVX2 without VNNI, full-range
u8s8 weights took it to Spearman 0.44; docs/backends.md). No assertion depends on the CPU's instruction set:
each holds, with margin, on AVX-512 VNNI and on AVX2-only CPUs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import PAIRS
from onnx import numpy_helper

from rerankd import RerankdError, Reranker, Settings
from rerankd.cli.main import cli
from rerankd.corpus import corpus_lines
from rerankd.export import export_onnx
from rerankd.model import load_model
from rerankd.model.quality import MIN_SPEARMAN, cpu_features, reference_pairs, spearman
from rerankd.model.quantize import bitsandbytes_8bit
from rerankd.testing import make_test_model


@pytest.fixture(scope="module")
def outlier_dir(tmp_path_factory):
    """A tiny model with outlier weight channels: fine in fp32, constant scores in INT8."""
    return make_test_model(tmp_path_factory.mktemp("outliers"), shape="tiny", int8_outliers=True)


@pytest.fixture(scope="module")
def mini_fp32(mini_dir: Path) -> Reranker:
    return Reranker(str(mini_dir), device="cpu")


@pytest.fixture(scope="module")
def mini_int8_export(mini_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`rerankd export --quantize int8 --optimize 1` of the mini fixture: (directory, CLI output)."""
    out = tmp_path_factory.mktemp("mini-int8") / "q"
    result = CliRunner().invoke(cli, ["export", "--model", str(mini_dir), "--out", str(out),
                                      "--quantize", "int8", "--optimize", "1"])
    assert result.exit_code == 0, result.output
    return out, result.stdout


def held_out_pairs() -> list[tuple[str, str]]:
    """48 English and Chinese corpus pairs that the gate's reference set doesn't hold."""
    reference = {text for pair in reference_pairs() for text in pair}
    lines = [line for line in corpus_lines()[3::5] if line not in reference]
    queries, documents = lines[:4], lines[4:52]
    return [(queries[i // 12], document) for i, document in enumerate(documents)]


def passed_gate(caplog: pytest.LogCaptureFixture) -> str:
    [verdict] = [r.getMessage() for r in caplog.records if "passes the INT8 quality gate" in r.getMessage()]
    return verdict


def test_spearman_ranks_ties_by_their_average():
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9486833)
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert spearman(np.arange(5.0), np.zeros(5)) == 0.0  # a constant output ranks nothing


def test_reference_pairs_are_fixed_and_bilingual():
    pairs = reference_pairs()
    assert len(pairs) == 36 and pairs == reference_pairs()
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in doc) for _, doc in pairs)


def test_cpu_features_name_the_int8_extensions_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm asimddp\n")
    old = tmp_path / "old"
    old.write_text("flags\t\t: fpu sse2\n")
    assert cpu_features(x86) == "avx2, avx512f, avx512bw, avx512_vnni"
    assert cpu_features(arm) == "asimd, asimddp"
    assert cpu_features(old).startswith("none of avx2, avx512f")
    assert cpu_features(tmp_path / "absent") == "unknown"


def test_torch_int8_ranks_like_fp32(mini_dir: Path, mini_fp32: Reranker, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rerankd.model.quality"):
        int8 = Reranker(str(mini_dir), device="cpu", dtype="int8")
    assert int8.loaded.dtype == "int8"
    assert f"CPU: {cpu_features()})" in passed_gate(caplog)
    pairs = held_out_pairs()
    expected = mini_fp32.compute_score(pairs, normalize=False)
    got = int8.compute_score(pairs, normalize=False)
    assert got != expected  # really quantised
    assert spearman(np.array(got), np.array(expected)) >= MIN_SPEARMAN


def test_torch_int8_refuses_a_model_that_quantises_badly(outlier_dir):
    assert Reranker(str(outlier_dir), device="cpu").compute_score(PAIRS)  # fp32 is fine
    with pytest.raises(RerankdError, match=r"ranks unlike the fp32 model: Spearman 0\.0000") as refused:
        load_model(Settings(model=str(outlier_dir), device="cpu", dtype="int8"))
    assert f"CPU: {cpu_features()})" in str(refused.value)


def test_onnx_int8_export_passes_the_gate_and_serves(mini_int8_export: tuple[Path, str], mini_fp32: Reranker) -> None:
    out, output = mini_int8_export
    assert "int8" in output and "Spearman vs fp32" in output
    info = json.loads((out / "rerankd_export.json").read_text())
    assert info["dtype"] == "int8" and info["spearman"] >= MIN_SPEARMAN
    assert info["gate_cpu"] == cpu_features()
    onnx_int8 = Reranker(str(out))
    assert (onnx_int8.scorer.backend.name, onnx_int8.loaded.dtype) == ("onnx", "int8")
    pairs = held_out_pairs()
    got = onnx_int8.compute_score(pairs, normalize=False)
    assert spearman(np.array(got), np.array(mini_fp32.compute_score(pairs, normalize=False))) >= MIN_SPEARMAN
    with pytest.raises(RerankdError, match="is an int8 ONNX export"):
        load_model(Settings(model=str(out), dtype="fp32"))


def test_onnx_int8_weights_leave_no_room_to_saturate(mini_int8_export: tuple[Path, str]) -> None:
    """Without VNNI, x86 sums two u8 x s8 products in 16 bits: 2 * 255 * 64 fits below 2**15, 2 * 255 * 127 doesn't.

    This holds the export to 7-bit weights on any CPU, where the gate only sees the exporting CPU's rounding.
    """
    graph = onnx.load(str(mini_int8_export[0] / "model.onnx"))
    weights = [numpy_helper.to_array(t) for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_onnx_int8_export_of_a_bad_model_is_refused_unless_forced(outlier_dir, tmp_path):
    refused = CliRunner().invoke(cli, ["export", "--model", str(outlier_dir), "--out", str(tmp_path / "q"),
                                       "--quantize", "int8"])
    assert refused.exit_code != 0
    assert "ranks unlike the fp32 model" in refused.output and "--force" in refused.output
    assert f"CPU: {cpu_features()})" in refused.output
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
