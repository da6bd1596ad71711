"""Tests for rerankd.testing.make_test_model (tiny shape only, CPU, fast)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

from rerankd.testing import SHAPES, Shape, make_test_model

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

TOKENIZER_TEXTS = [
    "Hello world",
    "What is a reranker? It scores each passage against the query.",
    "水在高山上的沸点比在平原上低，因为那里的气压较低。",
    "我用Python写了一个reranker服务，部署在GPU服务器上。",
    "ＡＢＣ１２３ ａｂｃ！ （ｔｅｓｔ）",
    "many    spaces     here",
    "   leading and trailing   ",
    "Café naïve façade crème brûlée, Zürich, Dvořák, Ångström",
    "emoji 😀🎉 and ☃ snowman, ꙮ unknown",
    "😀😀 x 😀",
    "tab\tand\nnewline\r\nand\u3000ideographic space and\u00a0nbsp",
    "ﬁ ligature Ⅻ ㈱ ½ ①",
    "Prices: 3.50 EUR, $12.99, ¥1,200 and 45% off; x² + y² = z²",
    "zero\u200bwidth",
    "",
    " ",
]

PAIRS = [
    ("how long should I boil an egg", "About six minutes for a soft yolk and ten minutes for a firm one."),
    (
        "how long should I boil an egg",
        "The Silk Road was a network of trade routes linking China with the Mediterranean.",
    ),
    ("what causes inflation", "Prices rise when demand outpaces supply or when production costs increase."),
    ("what causes inflation", "Bees communicate the direction of flowers through a waggle dance."),
    ("长城是什么时候修建的", "长城在许多朝代中被反复修建，今天看到的大部分城墙是明朝时期留下的。"),
    ("长城是什么时候修建的", "红扁豆不需要提前浸泡，大约十五分钟就能煮成浓稠顺滑的汤。"),
    ("reranker GPU", "我用Python写了一个reranker服务，部署在GPU服务器上。"),
    ("ＡＢＣ", "Full-width forms should normalise to ordinary letters and digits."),
    ("sleep", "Adults need between seven and nine hours of sleep each night."),
    ("encryption key", "Encryption protects data by turning it into ciphertext."),
]


def _digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fixture")
    return {
        "xlmr": make_test_model(root / "xlmr", shape="tiny", arch="xlm-roberta", seed=0),
        "xlmr_again": make_test_model(root / "xlmr_again", shape="tiny", arch="xlm-roberta", seed=0),
        "xlmr_seed1": make_test_model(root / "xlmr_seed1", shape="tiny", arch="xlm-roberta", seed=1),
        "bert": make_test_model(root / "bert", shape="tiny", arch="bert", seed=0),
        "bert_again": make_test_model(root / "bert_again", shape="tiny", arch="bert", seed=0),
    }


# --------------------------------------------------------------------------- shapes / API


def test_shapes() -> None:
    assert set(SHAPES) == {"tiny", "mini", "base", "m3"}
    assert all(isinstance(s, Shape) for s in SHAPES.values())
    dims = {
        name: (
            s.num_hidden_layers,
            s.hidden_size,
            s.num_attention_heads,
            s.intermediate_size,
            s.max_position_embeddings,
        )
        for name, s in SHAPES.items()
    }
    assert dims == {
        "tiny": (2, 32, 2, 64, 514),
        "mini": (6, 384, 12, 1536, 514),
        "base": (12, 768, 12, 3072, 514),
        "m3": (24, 1024, 16, 4096, 8194),
    }
    assert SHAPES["m3"].vocab_size == 250002
    assert SHAPES["tiny"].vocab_size is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        SHAPES["tiny"].hidden_size = 64  # type: ignore[misc]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        make_test_model(tmp_path, shape="huge")
    with pytest.raises(ValueError, match="arch"):
        make_test_model(tmp_path, arch="gpt2")


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(built: dict[str, Path]) -> None:
    first, again = _digests(built["xlmr"]), _digests(built["xlmr_again"])
    assert set(first) == {
        "config.json",
        "model.safetensors",
        "sentencepiece.bpe.model",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert first == again
    bert, bert_again = _digests(built["bert"]), _digests(built["bert_again"])
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= set(bert)
    assert bert == bert_again


def test_same_bytes_in_a_fresh_process(built: dict[str, Path], tmp_path: Path) -> None:
    # A new interpreter with another hash seed (and default torch CPU kernels):
    # catches hash-order and SIMD-path dependence that one process cannot.
    code = (
        "import sys; from rerankd.testing import make_test_model\n"
        "make_test_model(sys.argv[1], arch='xlm-roberta'); make_test_model(sys.argv[2], arch='bert')\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", ATEN_CPU_CAPABILITY="default")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x"), str(tmp_path / "b")], check=True, env=env, timeout=120
    )
    assert _digests(tmp_path / "x") == _digests(built["xlmr"])
    assert _digests(tmp_path / "b") == _digests(built["bert"])


def test_other_seed_other_weights(built: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    first, other = _digests(built["xlmr"]), _digests(built["xlmr_seed1"])
    assert first["model.safetensors"] != other["model.safetensors"]
    for name in ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json"):
        assert first[name] == other[name]
    w0 = load_file(built["xlmr"] / "model.safetensors")
    w1 = load_file(built["xlmr_seed1"] / "model.safetensors")
    assert w0.keys() == w1.keys()
    key = "roberta.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(w0[key], w1[key])


def test_config_marks_fixture(built: dict[str, Path]) -> None:
    config = json.loads((built["xlmr"] / "config.json").read_text(encoding="utf-8"))
    assert config["rerankd_fixture"] == {
        "shape": "tiny",
        "arch": "xlm-roberta",
        "seed": 0,
        "note": "random weights: scores are not relevance",
    }
    assert config["architectures"] == ["XLMRobertaForSequenceClassification"]
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (1, 0, 2)
    assert config["type_vocab_size"] == 1
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 32
    tok_config = json.loads((built["xlmr"] / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tok_config["tokenizer_class"] == "XLMRobertaTokenizer"
    assert tok_config["model_max_length"] == 512
    seed1 = json.loads((built["xlmr_seed1"] / "config.json").read_text(encoding="utf-8"))
    assert seed1["rerankd_fixture"]["seed"] == 1


# --------------------------------------------------------------------------- xlm-roberta tokenizer


@pytest.fixture(scope="module")
def xlmr_tokenizer(built: dict[str, Path]):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(built["xlmr"])


def _spm_ids(sp, text: str) -> list[int]:
    # fairseq offset: spm <unk>=0 -> 3, every other piece id -> id + 1 (<s>=0, <pad>=1, </s>=2 in front)
    return [0] + [3 if i == 0 else i + 1 for i in sp.encode(text)] + [2]


def test_xlmr_tokenizer_class(xlmr_tokenizer, built: dict[str, Path]) -> None:
    tok = xlmr_tokenizer
    assert type(tok).__name__ in ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast")  # transformers 5 / 4.x
    assert tok.model_max_length == 512
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    config = json.loads((built["xlmr"] / "config.json").read_text(encoding="utf-8"))
    assert len(tok) == config["vocab_size"]
    assert tok.mask_token_id == len(tok) - 1


@pytest.mark.parametrize("text", TOKENIZER_TEXTS)
def test_xlmr_tokenizer_matches_sentencepiece(xlmr_tokenizer, built: dict[str, Path], text: str) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(built["xlmr"] / "sentencepiece.bpe.model"))
    expected = _spm_ids(sp, text)
    if TRANSFORMERS_MAJOR < 5 and text != text.rstrip(" "):
        # transformers 4.x runs tokenizer.json as written; like the real XLM-R tokenizer.json files it
        # keeps one "▁" piece for trailing spaces (transformers 5 rebuilds the pipeline and drops it).
        expected = expected[:-1] + [xlmr_tokenizer.convert_tokens_to_ids("▁"), 2]
    assert xlmr_tokenizer(text)["input_ids"] == expected


def test_xlmr_tokenizer_normalises(xlmr_tokenizer) -> None:
    def ids(text: str) -> list[int]:
        return xlmr_tokenizer(text)["input_ids"]

    assert ids("ＡＢＣ１２３") == ids("ABC123")
    assert ids("many    spaces") == ids("many spaces")
    assert ids("  padded") == ids("padded")
    # characters the corpus never saw map to <unk> (3), runs of them fuse into one
    emoji = ids("😀🎉")
    assert emoji[0] == 0 and emoji[-1] == 2 and 3 in emoji and emoji.count(3) == 1


def test_xlmr_pair_encoding(xlmr_tokenizer) -> None:
    q, d = "what is a reranker", "It scores passages."
    enc = xlmr_tokenizer(q, d)
    q_ids = xlmr_tokenizer(q, add_special_tokens=False)["input_ids"]
    d_ids = xlmr_tokenizer(d, add_special_tokens=False)["input_ids"]
    assert enc["input_ids"] == [0, *q_ids, 2, 2, *d_ids, 2]
    assert "token_type_ids" not in enc or set(enc["token_type_ids"]) == {0}


# --------------------------------------------------------------------------- models


def _logits(model_dir: Path) -> tuple:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    batch = tok([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    return model, batch, logits


def test_xlmr_model_scores_spread(built: dict[str, Path]) -> None:
    model, _, logits = _logits(built["xlmr"])
    assert type(model).__name__ == "XLMRobertaForSequenceClassification"
    assert model.config.num_labels == 1
    assert model.dtype == torch.float32
    assert logits.shape == (len(PAIRS), 1)
    assert torch.isfinite(logits).all()
    assert logits.std().item() > 0.5
    assert logits.abs().max().item() < 20


def test_xlmr_model_matches_unbatched(built: dict[str, Path]) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built["xlmr"])
    model = AutoModelForSequenceClassification.from_pretrained(built["xlmr"]).eval()
    _, _, batched = _logits(built["xlmr"])
    with torch.no_grad():
        single = torch.cat([model(**tok(q, d, return_tensors="pt")).logits for q, d in PAIRS])
    torch.testing.assert_close(single, batched, atol=1e-4, rtol=1e-4)


def test_bert_fixture(built: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built["bert"])
    assert type(tok).__name__ in ("BertTokenizer", "BertTokenizerFast")
    assert tok.model_max_length == 512
    q, d = "What is a Reranker", "它会给每个段落打分。"
    enc = tok(q, d)
    q_ids = tok(q, add_special_tokens=False)["input_ids"]
    d_ids = tok(d, add_special_tokens=False)["input_ids"]
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    assert enc["input_ids"] == [cls_id, *q_ids, sep_id, *d_ids, sep_id]
    assert enc["token_type_ids"] == [0] * (len(q_ids) + 2) + [1] * (len(d_ids) + 1)
    assert tok.convert_ids_to_tokens(q_ids) == ["what", "is", "a", "reranker"]
    assert tok.unk_token_id not in d_ids  # Chinese characters are split and all in the vocab

    model, batch, logits = _logits(built["bert"])
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_labels == 1 and model.config.type_vocab_size == 2
    assert "token_type_ids" in batch
    assert torch.isfinite(logits).all()
    assert logits.std().item() > 0.3
    config = json.loads((built["bert"] / "config.json").read_text(encoding="utf-8"))
    assert config["rerankd_fixture"]["arch"] == "bert"
    assert config["vocab_size"] == len(tok)
