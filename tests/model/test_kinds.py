"""Model kinds: detected from the config and the name, overridable, refused clearly where they don't apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from transformers import PretrainedConfig

from rerankd import Reranker
from rerankd.cli.main import cli
from rerankd.errors import RerankdError
from rerankd.export import export_onnx
from rerankd.model.kinds import detect_kind
from rerankd.settings import Settings
from rerankd.testing import make_causal_test_model


def _config(architecture: str) -> PretrainedConfig:
    config = PretrainedConfig(architectures=[architecture])
    config.model_type = architecture.split("For")[0].lower()
    return config


@pytest.mark.parametrize(
    ("architecture", "name", "kind"),
    [
        ("XLMRobertaForSequenceClassification", "BAAI/bge-reranker-v2-m3", "cross-encoder"),
        ("Qwen3ForSequenceClassification", "tomaarsen/Qwen3-Reranker-0.6B-seq-cls", "cross-encoder"),
        ("Qwen3ForCausalLM", "Qwen/Qwen3-Reranker-0.6B", "qwen3-reranker"),
        ("Qwen3ForCausalLM", "/models/my-qwen3-reranker-finetune", "qwen3-reranker"),
        ("GemmaForCausalLM", "BAAI/bge-reranker-v2-gemma", "flag-llm-reranker"),
    ],
)
def test_the_kind_comes_from_the_config_and_the_name(architecture, name, kind):
    assert detect_kind(_config(architecture), name, "auto", name) == kind


def test_an_unknown_causal_lm_gets_an_error_listing_the_kinds():
    with pytest.raises(RerankdError, match="--model-kind") as caught:
        detect_kind(_config("LlamaForCausalLM"), "meta-llama/Llama-3.2-1B", "auto", "hub model")
    assert all(k in str(caught.value) for k in ("cross-encoder", "qwen3-reranker", "flag-llm-reranker"))


def test_model_kind_overrides_the_name_and_needs_a_causal_lm():
    assert detect_kind(_config("LlamaForCausalLM"), "my-llm", "flag-llm-reranker", "x") == "flag-llm-reranker"
    with pytest.raises(RerankdError, match="needs a causal LM"):
        detect_kind(_config("XLMRobertaForSequenceClassification"), "m3", "qwen3-reranker", "x")


@pytest.fixture(scope="module")
def renamed_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixture that looks like a real checkpoint: no rerankd_fixture marker, the real model's name."""
    built = make_causal_test_model(tmp_path_factory.mktemp("built"), shape="tiny", arch="qwen3")
    target = tmp_path_factory.mktemp("hub") / "Qwen3-Reranker-0.6B"
    shutil.copytree(built, target)
    config = json.loads((target / "config.json").read_text())
    del config["rerankd_fixture"]
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_a_checkpoint_named_like_qwen3_reranker_loads_as_one_with_its_default_length(renamed_qwen3):
    reranker = Reranker(str(renamed_qwen3), device="cpu")
    assert reranker.loaded.kind == "qwen3-reranker"
    assert reranker.encoder.max_length == 8192  # the kind's default; an explicit --max-length wins:
    assert Reranker(str(renamed_qwen3), device="cpu", max_length=1024).encoder.max_length == 1024
    # The same weights read as a FlagLLMReranker score differently.
    flag = Reranker(str(renamed_qwen3), device="cpu", model_kind="flag-llm-reranker")
    pair = [("what do pandas eat?", "bamboo")]
    assert flag.loaded.kind == "flag-llm-reranker" and flag.compute_score(pair) != reranker.compute_score(pair)


def test_onnx_export_refuses_llm_rerankers(renamed_qwen3, tmp_path):
    with pytest.raises(RerankdError, match="ONNX export covers cross-encoders only"):
        export_onnx(Settings(model=str(renamed_qwen3)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_query_cap_over_the_kinds_default_length_is_refused(xlmr_dir):
    with pytest.raises(RerankdError, match=r"query_max_length must be below max_length \(512\)"):
        Reranker(str(xlmr_dir), device="cpu", query_max_length=600)


def test_cli_scores_with_an_instruction(renamed_qwen3):
    runner = CliRunner()
    args = ["score", "--model", str(renamed_qwen3), "--device", "cpu", "--json", "what do pandas eat?", "bamboo"]
    plain = runner.invoke(cli, args)
    instructed = runner.invoke(cli, [*args, "--instruction", "Find passages about animals"])
    assert plain.exit_code == 0 and instructed.exit_code == 0, plain.output + instructed.output
    assert json.loads(plain.output) != json.loads(instructed.output)
