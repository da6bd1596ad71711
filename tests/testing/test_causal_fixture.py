"""The Qwen3 and Gemma LLM-reranker fixtures: real architectures, tokenizers made like the real ones, same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from transformers import AutoConfig, AutoTokenizer

from rerankd.cli.main import cli
from rerankd.testing import CAUSAL_SHAPES, make_causal_test_model


def _digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module", params=["qwen3", "gemma"])
def built(request, tmp_path_factory) -> tuple[str, Path]:
    arch = request.param
    return arch, make_causal_test_model(tmp_path_factory.mktemp(arch), shape="tiny", arch=arch)


def test_same_arch_and_seed_give_the_same_bytes(built, tmp_path):
    arch, path = built
    assert _digests(make_causal_test_model(tmp_path, shape="tiny", arch=arch)) == _digests(path)


def test_the_tokenizer_has_the_tokens_the_reference_code_uses(built):
    arch, path = built
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.is_fast
    for word in ("yes", "no", "Yes"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    if arch == "qwen3":
        assert type(tokenizer).__name__.startswith("Qwen2Tokenizer")
        assert tokenizer.bos_token_id is None and tokenizer.pad_token == "<|endoftext|>"
        for special in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"):
            assert len(tokenizer(special, add_special_tokens=False)["input_ids"]) == 1, special
        assert tokenizer("hi")["input_ids"] == tokenizer("hi", add_special_tokens=False)["input_ids"]
    else:
        assert type(tokenizer).__name__.startswith("GemmaTokenizer") and tokenizer.padding_side == "left"
        assert tokenizer.bos_token_id == 2 and tokenizer.pad_token_id == 0
        assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id
        # Byte fallback: a character the corpus never had still encodes, as bytes.
        assert "<0x" in "".join(tokenizer.convert_ids_to_tokens(tokenizer("☃", add_special_tokens=False)["input_ids"]))


def test_the_config_is_the_real_architecture_and_names_the_kind(built):
    arch, path = built
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == ["Qwen3ForCausalLM" if arch == "qwen3" else "GemmaForCausalLM"]
    assert config.rerankd_fixture["kind"] == ("qwen3-reranker" if arch == "qwen3" else "flag-llm-reranker")
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention, as the real ones


def test_the_benchmark_shape_is_qwen3_0_6b():
    shape = CAUSAL_SHAPES["qwen3-0.6b"]
    assert (shape.num_hidden_layers, shape.hidden_size, shape.vocab_size) == (28, 1024, 151936)
    assert shape.archs == ("qwen3",)


def test_cli_makes_causal_fixtures_and_refuses_a_shape_the_arch_lacks(tmp_path):
    runner = CliRunner()
    made = runner.invoke(cli, ["make-test-model", "--arch", "gemma", str(tmp_path / "g")])
    assert made.exit_code == 0 and "gemma" in made.output
    refused = runner.invoke(cli, ["make-test-model", "--arch", "gemma", "--shape", "qwen3-0.6b", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "not made for arch 'gemma'" in refused.output
