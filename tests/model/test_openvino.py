"""The OpenVINO backend (exported IR, converted at load), its INT8 export, and `--backend auto`'s measured choice."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import PAIRS

from rerankd import RerankdError, Reranker, Settings
from rerankd.cli.main import cli
from rerankd.export import export_onnx, export_openvino
from rerankd.model import load_model, openvino_ir
from rerankd.model import loading as loading_module
from rerankd.model.loading import backend_candidates
from rerankd.model.quality import MIN_SPEARMAN, cpu_features, spearman

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def openvino_dirs(xlmr_dir, bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("openvino")
    return {
        "xlm-roberta": export_openvino(Settings(model=str(xlmr_dir)), out / "xlmr").path,
        "bert": export_openvino(Settings(model=str(bert_dir)), out / "bert").path,
    }


@pytest.fixture(scope="module")
def int8_export(xlmr_dir, tmp_path_factory) -> tuple[Path, str]:
    """`rerankd export --format openvino --quantize int8` of the tiny XLM-R fixture: (directory, CLI output)."""
    try:
        openvino_ir.check_int8_cpu("OpenVINO INT8")
    except RerankdError as refused:  # tested below on any CPU, by test_openvino_int8_is_refused_without_vnni
        pytest.skip(str(refused))
    out = tmp_path_factory.mktemp("openvino-int8") / "q"
    result = CliRunner().invoke(cli, ["export", "--model", str(xlmr_dir), "--out", str(out),
                                      "--format", "openvino", "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    return out, result.stdout


def max_diff(got: list[float], expected: list[float]) -> float:
    return max(abs(a - b) for a, b in zip(got, expected))


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_openvino_export_scores_equal_torch_within_1e_4(arch, openvino_dirs, reranker, bert_reranker):
    torch_reranker = reranker if arch == "xlm-roberta" else bert_reranker
    openvino = Reranker(str(openvino_dirs[arch]), backend="openvino")
    assert (openvino.scorer.backend.name, openvino.loaded.dtype) == ("openvino", "fp32")
    expected = torch_reranker.compute_score(PAIRS, normalize=False)
    got = openvino.compute_score(PAIRS, normalize=False)
    assert max_diff(got, expected) <= 1e-4
    assert max(got) - min(got) > 0.5  # the trained head is there: scores spread, not a bare encoder
    info = json.loads((openvino_dirs[arch] / "rerankd_openvino_export.json").read_text())
    assert info["format"] == "openvino" and info["dtype"] == "fp32" and info["max_abs_logit_diff"] <= 1e-4


def test_openvino_converts_a_transformers_directory_at_load_and_says_how_long(xlmr_dir, reranker, caplog):
    with caplog.at_level("INFO", logger="rerankd.model.loading"):
        openvino = Reranker(str(xlmr_dir), backend="openvino", threads=1)
    assert openvino.scorer.backend.name == "openvino"
    assert any("converted" in r.getMessage() and "to OpenVINO in" in r.getMessage() for r in caplog.records)
    assert max_diff(openvino.compute_score(PAIRS, normalize=False), reranker.compute_score(PAIRS, normalize=False)
                    ) <= 1e-4


def test_missing_openvino_names_the_extra(xlmr_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(RerankdError, match=r"pip install 'rerankd\[openvino\]'"):
        load_model(Settings(model=str(xlmr_dir), backend="openvino"))


def test_openvino_refuses_a_gpu_and_a_precision_it_does_not_hold(openvino_dirs, xlmr_dir):
    with pytest.raises(RerankdError, match="runs on the CPU"):
        load_model(Settings(model=str(openvino_dirs["bert"]), backend="openvino", device="cuda"))
    with pytest.raises(RerankdError, match="--quantize int8"):
        load_model(Settings(model=str(xlmr_dir), backend="openvino", dtype="int8"))


def test_export_command_writes_an_openvino_directory_and_refuses_onnx_options(xlmr_dir, tmp_path):
    result = CliRunner().invoke(cli, ["export", "--model", str(xlmr_dir), "--out", str(tmp_path / "x"),
                                      "--format", "openvino", "--optimize", "1"])
    assert result.exit_code != 0 and "--optimize is for --format onnx" in result.output
    assert not (tmp_path / "x").exists()


def test_openvino_int8_export_passes_the_gate_and_serves(int8_export, reranker):
    out, output = int8_export
    assert "openvino int8" in output and "Spearman vs fp32" in output
    info = json.loads((out / "rerankd_openvino_export.json").read_text())
    assert info["dtype"] == "int8" and info["spearman"] >= MIN_SPEARMAN and info["gate_cpu"] == cpu_features()
    int8 = Reranker(str(out))  # auto: nothing but an INT8 export in the directory
    assert (int8.scorer.backend.name, int8.loaded.dtype) == ("openvino", "int8")
    got = int8.compute_score(PAIRS, normalize=False)
    expected = reranker.compute_score(PAIRS, normalize=False)
    assert got != expected  # really quantised
    assert spearman(np.array(got), np.array(expected)) >= MIN_SPEARMAN


def test_openvino_int8_is_refused_without_vnni(openvino_dirs, xlmr_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(openvino_ir, "cpu_features", lambda: "avx2")
    with pytest.raises(RerankdError, match="OpenVINO INT8 needs a CPU with VNNI, and this one has avx2"):
        export_openvino(Settings(model=str(xlmr_dir)), tmp_path / "q", quantize="int8")
    assert not (tmp_path / "q").exists()
    labelled_int8 = tmp_path / "int8"
    shutil.copytree(openvino_dirs["xlm-roberta"], labelled_int8)
    (labelled_int8 / "rerankd_openvino_export.json").write_text(json.dumps({"dtype": "int8"}))
    with pytest.raises(RerankdError, match="is an OpenVINO INT8 export: OpenVINO INT8 needs a CPU with VNNI"):
        load_model(Settings(model=str(labelled_int8)))
    monkeypatch.setattr(openvino_ir, "cpu_features", lambda: "avx2, avx512f, avx512bw, avx512_vnni")
    assert load_model(Settings(model=str(labelled_int8))).dtype == "int8"


def test_openvino_int8_matmul_weights_leave_no_room_to_saturate(int8_export):
    """Without VNNI, x86 sums two u8 x s8 products in 16 bits: weights within 64 can't saturate (docs/backends.md).

    The embedding tables are INT8 too, but they are looked up, not multiplied.
    """
    import openvino as ov

    model = ov.Core().read_model(int8_export[0] / "openvino_model.xml")
    matmul_weights = []
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8:
            node, hops = op, 0
            while node.get_type_name() != "MatMul" and hops < 4:  # Convert, Subtract, Multiply, then MatMul
                consumers = list(node.output(0).get_target_inputs())
                if len(consumers) != 1:
                    break
                node, hops = consumers[0].get_node(), hops + 1
            if node.get_type_name() == "MatMul":
                matmul_weights.append(int(np.abs(op.get_data().astype(np.int32)).max()))
    assert matmul_weights
    assert max(matmul_weights) <= 64


@pytest.fixture(scope="module")
def every_format(xlmr_dir, openvino_dirs, tmp_path_factory) -> Path:
    """The XLM-R fixture's torch weights with an ONNX and an OpenVINO export beside them."""
    both = tmp_path_factory.mktemp("every-format") / "model"
    shutil.copytree(xlmr_dir, both)
    export_onnx(Settings(model=str(xlmr_dir)), both)
    for name in ("openvino_model.xml", "openvino_model.bin", "rerankd_openvino_export.json"):
        shutil.copy(openvino_dirs["xlm-roberta"] / name, both / name)
    return both


def test_auto_measures_every_installed_backend_and_keeps_the_fastest(every_format, reranker, caplog):
    with caplog.at_level("INFO", logger="rerankd.model.autoselect"):
        loaded = load_model(Settings(model=str(every_format), device="cpu"))
    assert set(loaded.backend_timings) == {"torch", "onnx", "openvino"}
    assert loaded.backend == min(loaded.backend_timings, key=loaded.backend_timings.get)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("--backend auto")]
    assert loaded.backend in line and "openvino" in line and "ms" in line
    chosen = Reranker(str(every_format), device="cpu")
    assert chosen.scorer.backend.name in loaded.backend_timings
    assert max_diff(chosen.compute_score(PAIRS, normalize=False), reranker.compute_score(PAIRS, normalize=False)
                    ) <= 1e-4


def test_auto_considers_only_installed_runtimes_and_never_int8_by_itself(every_format, int8_export, xlmr_dir,
                                                                         monkeypatch, tmp_path):
    on_cpu = Settings(model=str(every_format), device="cpu")
    assert backend_candidates(on_cpu, every_format) == ["torch", "onnx", "openvino"]
    assert backend_candidates(on_cpu.with_changes(backend="openvino"), every_format) == ["openvino"]
    real_find_spec = loading_module.importlib.util.find_spec
    monkeypatch.setattr(loading_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real_find_spec(name, *a))
    assert backend_candidates(on_cpu, every_format) == ["torch", "onnx"]
    monkeypatch.undo()
    # Torch weights beside an INT8 export: auto runs fp32 torch; --dtype int8 asks for INT8.
    mixed = tmp_path / "mixed"
    shutil.copytree(xlmr_dir, mixed)
    for name in ("openvino_model.xml", "openvino_model.bin", "rerankd_openvino_export.json"):
        shutil.copy(int8_export[0] / name, mixed / name)
    assert backend_candidates(Settings(model=str(mixed), device="cpu"), mixed) == ["torch"]
    assert backend_candidates(Settings(model=str(mixed), device="cpu", dtype="int8"), mixed) == ["torch", "openvino"]
