"""Random-weight LLM-reranker fixtures: Qwen3 and Gemma causal LMs in Hugging Face format.

``make_causal_test_model`` writes a causal LM of the real architecture (Qwen3ForCausalLM for
Qwen3-Reranker, GemmaForCausalLM for BAAI/bge-reranker-v2-gemma) with a tokenizer made the way the
real model's was, trained on the bundled corpus:

* qwen3: byte-level BPE with Qwen2's pre-tokenizer regex and NFC, the chat special tokens
  (``<|endoftext|>`` as pad, ``<|im_start|>``, ``<|im_end|>``) and ``<think>``/``</think>``; no BOS.
* gemma: a sentencepiece BPE model (byte fallback, no dummy prefix), converted the way transformers'
  GemmaConverter converts it; ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, BOS added, left padding.

"yes", "no" (Qwen3's answer tokens) and "Yes" (FlagLLMReranker's) are single tokens. Like the
cross-encoder fixture, the files are a pure function of ``(shape, arch, seed)``: weights come from
``_fill_uniform``'s CPU-independent streams. config.json carries ``rerankd_fixture`` with the model kind,
so rerankd detects it like a real checkpoint; the scores mean nothing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

from rerankd.corpus import corpus_lines
from rerankd.testing.fixture import (
    _FIXTURE_NOTE,
    _fill_uniform,
    _no_init_weights,
    _require_sentencepiece,
    _save_quietly,
    _write_json,
    _write_text,
)

__all__ = ["CAUSAL_ARCHS", "CAUSAL_SHAPES", "CausalShape", "make_causal_test_model"]

CAUSAL_ARCHS = {"qwen3": "qwen3-reranker", "gemma": "flag-llm-reranker"}  # arch -> the model kind it tests


@dataclasses.dataclass(frozen=True)
class CausalShape:
    name: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int | None = None  # None: the tokenizer's size
    archs: tuple[str, ...] = ("qwen3", "gemma")


CAUSAL_SHAPES: dict[str, CausalShape] = {
    s.name: s
    for s in (
        CausalShape("tiny", 2, 64, 4, 2, 16, 128),
        CausalShape("mini", 4, 256, 4, 2, 64, 768),
        # Qwen/Qwen3-Reranker-0.6B: 28 x 1024, GQA 16/8 heads of 128, the real vocabulary
        CausalShape("qwen3-0.6b", 28, 1024, 16, 8, 128, 3072, vocab_size=151936, archs=("qwen3",)),
    )
}

# Positions the fixtures accept: Qwen3-Reranker's 8192 default fits, as does gemma's.
MAX_POSITIONS = 8192
BPE_VOCAB_SIZE = 4000
# The answer tokens must come out as single tokens, as in the real vocabularies: the corpus gets a few
# lines of them so that training merges them.
_ANSWER_LINES = ["yes", "no", "Yes", "No"] * 40
# Tied input/output embeddings of std EMBED_GAIN / sqrt(hidden): the answer logits spread by about
# EMBED_GAIN across inputs, so parity tests compare scores that differ. Linear layers are variance
# preserving, query/key peaked (QK_GAIN) for input-dependent attention, as in the cross-encoder fixture.
EMBED_GAIN = 2.0
QK_GAIN = 2.0

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_THINK = ["<think>", "</think>"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
GEMMA_TURNS = ["<start_of_turn>", "<end_of_turn>"]


# --------------------------------------------------------------------------- tokenizers


def _training_lines() -> list[str]:
    return corpus_lines() + _ANSWER_LINES


def _write_qwen_tokenizer(out: Path) -> int:
    """Byte-level BPE assembled as transformers' Qwen2Converter does for Qwen3's tokenizer.json."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                        byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator(_training_lines(), trainer=trainer)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in QWEN_SPECIALS])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in QWEN_THINK])
    for word in ("yes", "no"):
        if word not in tok.get_vocab():
            raise RuntimeError(f"the fixture's BPE did not learn {word!r} as one token")
    model = json.loads(tok.to_str())["model"]
    _write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    _write_json(out / "vocab.json", model["vocab"])
    merges = ["#version: 0.2"] + [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    _write_text(out / "merges.txt", "\n".join(merges) + "\n")
    ids = {t: tok.token_to_id(t) for t in QWEN_SPECIALS + QWEN_THINK}
    _write_json(out / "tokenizer_config.json", {
        "added_tokens_decoder": {
            str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                          "special": t in QWEN_SPECIALS}
            for t in QWEN_SPECIALS + QWEN_THINK
        },
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })
    return tok.get_vocab_size()


def _train_gemma_spm(lines: list[str]) -> bytes:
    spm, _ = _require_sentencepiece()
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=writer,
        model_type="bpe",
        vocab_size=BPE_VOCAB_SIZE,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        control_symbols=["<mask>"],
        user_defined_symbols=GEMMA_TURNS,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return writer.getvalue()


def _write_gemma_tokenizer(out: Path) -> int:
    """Sentencepiece BPE converted as transformers' GemmaConverter converts gemma's tokenizer.model."""
    _, model_pb2 = _require_sentencepiece()
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import generate_merges

    spm_model = _train_gemma_spm(_training_lines())
    proto = model_pb2.ModelProto()
    proto.ParseFromString(spm_model)
    pieces = [p.piece for p in proto.pieces]
    if pieces[:5] != GEMMA_SPECIALS:
        raise RuntimeError(f"unexpected sentencepiece special pieces: {pieces[:5]!r}")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    for word in ("Yes", "yes", "no"):
        if word not in vocab:
            raise RuntimeError(f"the fixture's sentencepiece BPE did not learn {word!r} as one piece")
    tok = Tokenizer(BPE(vocab=vocab, merges=generate_merges(vocab), fuse_unk=True, unk_token="<unk>",
                        byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GEMMA_SPECIALS + GEMMA_TURNS])
    (out / "tokenizer.model").write_bytes(spm_model)
    _write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    _write_json(out / "tokenizer_config.json", {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(vocab[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True}
            for t in GEMMA_SPECIALS + GEMMA_TURNS
        },
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "model_max_length": MAX_POSITIONS,
        "pad_token": "<pad>",
        "padding_side": "left",
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
    })
    return len(vocab)


# --------------------------------------------------------------------------- weights


def _build_model(arch: str, shape: CausalShape, vocab_size: int, seed: int, kind: str) -> Any:
    import torch
    from torch import nn

    common = {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "head_dim": shape.head_dim,
        "max_position_embeddings": MAX_POSITIONS,
        "tie_word_embeddings": True,
    }
    if arch == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        config = Qwen3Config(**common, rms_norm_eps=1e-6, rope_theta=1_000_000.0, bos_token_id=None,
                             eos_token_id=None, architectures=["Qwen3ForCausalLM"])
        model_cls = Qwen3ForCausalLM
    else:
        from transformers import GemmaConfig, GemmaForCausalLM

        config = GemmaConfig(**common, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", pad_token_id=0,
                             eos_token_id=1, bos_token_id=2, architectures=["GemmaForCausalLM"])
        model_cls = GemmaForCausalLM
    config.rerankd_fixture = {"shape": shape.name, "arch": arch, "kind": kind, "seed": seed, "note": _FIXTURE_NOTE}
    with _no_init_weights():
        model = model_cls(config)
    model = model.to(torch.float32)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                if name == "lm_head":
                    continue  # tied to the embeddings
                gain = QK_GAIN if name.endswith(("q_proj", "k_proj")) else 1.0
                _fill_uniform(module.weight, gain / math.sqrt(module.in_features), seed, f"{name}.weight")
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                _fill_uniform(module.weight, EMBED_GAIN / math.sqrt(shape.hidden_size), seed, f"{name}.weight")
            elif "RMSNorm" in type(module).__name__:
                # Gemma scales by (1 + weight), Qwen3 by weight: both start as the identity.
                module.weight.fill_(0.0 if arch == "gemma" else 1.0)
        # Tied as in the real models; saved as one tensor where transformers ties them, else as an equal copy.
        model.lm_head.weight.copy_(model.get_input_embeddings().weight)
    model.eval()
    return model


def make_causal_test_model(out_dir: str | Path, *, shape: str = "tiny", arch: str = "qwen3", seed: int = 0) -> Path:
    """Write a random-weight Qwen3 or Gemma causal LM with its tokenizer to ``out_dir``; returns the path."""
    if arch not in CAUSAL_ARCHS:
        raise ValueError(f"unknown causal arch {arch!r}; expected one of {list(CAUSAL_ARCHS)}")
    spec = CAUSAL_SHAPES.get(shape)
    if spec is None or arch not in spec.archs:
        names = [s.name for s in CAUSAL_SHAPES.values() if arch in s.archs]
        raise ValueError(f"shape {shape!r} is not made for arch {arch!r}; expected one of {names}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_vocab = _write_qwen_tokenizer(out) if arch == "qwen3" else _write_gemma_tokenizer(out)
    vocab_size = spec.vocab_size or tok_vocab
    model = _build_model(arch, spec, vocab_size, seed, CAUSAL_ARCHS[arch])
    _save_quietly(model, out)
    return out
