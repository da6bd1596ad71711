"""Loading: local directories, hub ids offline, and refusing models that are not rerankers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoConfig, XLMRobertaModel

from rerankd import RerankdError, Reranker, Settings
from rerankd.errors import ErrorKind
from rerankd.model import load_model


def test_local_directory_loads_with_fixture_marker(xlmr_dir):
    loaded = load_model(Settings(model=str(xlmr_dir), device="cpu"))
    assert loaded.path == xlmr_dir.resolve()
    assert loaded.device.type == "cpu" and loaded.dtype == "fp32"
    assert loaded.fixture is not None
    assert loaded.max_supported_length == 512


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(RerankdError, match=f"model directory not found: {tmp_path / 'nope'}") as info:
        load_model(Settings(model=str(tmp_path / "nope")))
    assert info.value.kind is ErrorKind.MODEL_LOAD


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(RerankdError, match="has no config.json"):
        load_model(Settings(model=str(tmp_path)))


def test_bare_encoder_is_refused_with_what_is_expected(tmp_path, xlmr_dir):
    config = AutoConfig.from_pretrained(xlmr_dir)
    config.architectures = ["XLMRobertaModel"]
    XLMRobertaModel(config).save_pretrained(tmp_path)
    with pytest.raises(RerankdError, match="XLMRobertaModel, not a cross-encoder.*num_labels=1"):
        load_model(Settings(model=str(tmp_path)))


def test_classifier_with_several_labels_is_refused(tmp_path, xlmr_dir):
    shutil.copytree(xlmr_dir, tmp_path / "m")
    config = AutoConfig.from_pretrained(xlmr_dir)
    config.num_labels = 3
    config.save_pretrained(tmp_path / "m")
    with pytest.raises(RerankdError, match="num_labels=3"):
        load_model(Settings(model=str(tmp_path / "m")))


def test_encoder_weights_under_a_classifier_config_are_refused(tmp_path, xlmr_dir):
    config = AutoConfig.from_pretrained(xlmr_dir)
    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(tmp_path)
    AutoConfig.from_pretrained(xlmr_dir).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(xlmr_dir / name, tmp_path / name)
    with pytest.raises(RerankdError, match="no trained classification head"):
        load_model(Settings(model=str(tmp_path)))


def test_max_length_beyond_the_model_is_refused(xlmr_dir):
    with pytest.raises(RerankdError, match="supports \\(512 tokens\\)"):
        Reranker(str(xlmr_dir), device="cpu", max_length=1024)


def test_unavailable_device_is_a_clear_error(xlmr_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RerankdError, match="no CUDA GPU"):
        Reranker(str(xlmr_dir), device="cuda")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_length": 4}, "max_length must be at least 8"),
        ({"max_length": 512, "query_max_length": 600}, "query_max_length must be between"),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be at least 1"),
        ({"dtype": "int4"}, "dtype must be one of"),
        ({"device": "tpu"}, "device must be one of"),
    ],
)
def test_invalid_settings_are_refused(changes, message):
    with pytest.raises(RerankdError, match=message):
        Settings(**changes)


def test_cpu_fp32_forward_passes_run_without_onednn_and_leave_its_setting_alone(xlmr_dir):
    # oneDNN's per-shape kernel cache makes a long-running server's memory grow (see TorchBackend).
    from rerankd.model import TorchBackend

    backend = TorchBackend(load_model(Settings(model=str(xlmr_dir), device="cpu")))
    seen = []
    model = backend._model
    backend._model = lambda **inputs: seen.append(torch.backends.mkldnn.is_available() and
                                                  torch._C._get_mkldnn_enabled()) or model(**inputs)
    backend.forward({"input_ids": np.array([[0, 5, 2]]), "attention_mask": np.array([[1, 1, 1]])})
    assert seen == [False]
    assert torch._C._get_mkldnn_enabled()
