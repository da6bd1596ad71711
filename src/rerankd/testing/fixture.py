"""Random-weight cross-encoder fixtures in Hugging Face format.

``make_test_model`` writes a small (or real-sized) reranker with random weights
and a real, trained tokenizer to a directory, so the rest of rerankd can be
tested end to end without downloading anything.  The output is a pure function
of ``(shape, arch, seed)`` and the installed library versions: every file is
byte-for-byte identical across runs and machines.

Two things make that hold:

* The tokenizers are trained on the corpus shipped in ``rerankd/corpus``
  with single-threaded, non-sampling settings, from an in-memory iterator (so no
  file path ends up in the sentencepiece model).
* The weights do not come from torch's default initialisers.  ``normal_`` on CPU
  takes a different code path (and gives different bits) depending on the CPU's
  vector extensions (AVX2 vs. the default kernel used on e.g. ARM), so instead
  every parameter is filled from its own numpy PCG64 stream, keyed by
  ``(seed, parameter name)``, using integer-to-float conversion and plain IEEE
  arithmetic only.

The scores such a model produces are meaningless as relevance; config.json
carries a ``rerankd_fixture`` key saying so.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zlib
from pathlib import Path
from typing import Any

from rerankd.corpus import corpus_lines

__all__ = ["ARCHS", "SHAPES", "Shape", "make_test_model"]


@dataclasses.dataclass(frozen=True)
class Shape:
    """Transformer dimensions of a fixture model."""

    name: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 514
    # None: use the tokenizer's size.  Otherwise a fixed embedding table size
    # (the tokenizer's ids are all below it).
    vocab_size: int | None = None

    @property
    def model_max_length(self) -> int:
        # RoBERTa-style position ids start at padding_idx + 1 = 2.
        return self.max_position_embeddings - 2


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("tiny", 2, 32, 2, 64),
        # sentence-transformers/ms-marco-MiniLM-L-6-v2 shape
        Shape("mini", 6, 384, 12, 1536),
        # BAAI/bge-reranker-base shape
        Shape("base", 12, 768, 12, 3072),
        # BAAI/bge-reranker-v2-m3 shape
        Shape("m3", 24, 1024, 16, 4096, max_position_embeddings=8194, vocab_size=250002),
    )
}

ARCHS = ("xlm-roberta", "bert")
# bge-reranker-v2-m3's position table: the longest a fixture's may be.
MAX_POSITIONS = 8194

# sentencepiece unigram size; the corpus supports about 3350 pieces.
SPM_VOCAB_SIZE = 3000
# WordPiece size for the bert arch.
WORDPIECE_VOCAB_SIZE = 4000

# Embeddings are drawn with the usual BERT std.  The rest is not: with the
# default init (every Linear at std 0.02) attention is uniform, the <s>/[CLS]
# state is nearly the same for every input, and logits sit at one value +- 1e-2,
# which makes score-parity tests pass even when inputs are mangled.  So:
#   * encoder Linear layers: std ENCODER_LINEAR_GAIN / sqrt(fan_in) (variance-preserving),
#   * attention query/key: std QK_GAIN / sqrt(fan_in) (peaked, input-dependent attention),
#   * head hidden projection (classifier.dense / bert.pooler.dense): HEAD_DENSE_GAIN / sqrt(fan_in),
#   * final projection to the single logit: HEAD_OUT_GAIN / sqrt(fan_in).
# All biases are 0, LayerNorms are (1, 0).  Picked by experiment: on ordinary
# text pairs the logits spread with std ~1 and lie roughly within [-5, 5] for
# every shape, both archs (the per-seed offset varies).  Activations stay O(1),
# so fp16/bf16 runs are safe (bf16 on CPU moves mini/base logits by ~0.05-0.1).
INITIALIZER_RANGE = 0.02
ENCODER_LINEAR_GAIN = 1.0
QK_GAIN = 2.0
HEAD_DENSE_GAIN = 4.0
HEAD_OUT_GAIN = 2.0

_CHUNK = 1 << 18  # keeps the temporaries in cache

_FIXTURE_NOTE = "random weights: scores are not relevance"


# --------------------------------------------------------------------------- tokenizers


def _require_sentencepiece() -> tuple[Any, Any]:
    try:
        import sentencepiece as spm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "make_test_model(arch='xlm-roberta') needs the 'sentencepiece' package: pip install sentencepiece"
        ) from exc
    try:
        import google.protobuf  # noqa: F401
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "make_test_model(arch='xlm-roberta') needs the 'protobuf' package to read the sentencepiece model: "
            "pip install protobuf"
        ) from exc
    return spm, sentencepiece_model_pb2


def _train_sentencepiece(lines: list[str]) -> bytes:
    spm, _ = _require_sentencepiece()
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=writer,
        model_type="unigram",
        vocab_size=SPM_VOCAB_SIZE,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        # defaults, spelled out: unk=0, bos=1, eos=2, no pad piece
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return writer.getvalue()


def _xlmr_tokenizer_json(spm_model: bytes) -> str:
    """tokenizer.json as transformers' XLMRobertaConverter produced it for the real XLM-R checkpoints."""
    _, model_pb2 = _require_sentencepiece()
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    proto = model_pb2.ModelProto()
    proto.ParseFromString(spm_model)
    pieces = list(proto.pieces)
    if [p.piece for p in pieces[:3]] != ["<unk>", "<s>", "</s>"]:
        raise RuntimeError("unexpected sentencepiece special pieces: %r" % [p.piece for p in pieces[:3]])

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p.piece, p.score) for p in pieces[3:]]
    vocab += [("<mask>", 0.0)]

    tok = Tokenizer(Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tok.add_special_tokens(
        [
            AddedToken("<s>", normalized=False, special=True),
            AddedToken("<pad>", normalized=False, special=True),
            AddedToken("</s>", normalized=False, special=True),
            AddedToken("<unk>", normalized=False, special=True),
            AddedToken("<mask>", lstrip=True, normalized=False, special=True),
        ]
    )
    return tok.to_str(pretty=True)


def _added_tokens_decoder(tokens: list[tuple[int, str, bool]]) -> dict[str, dict[str, Any]]:
    return {
        str(i): {
            "content": content,
            "lstrip": lstrip,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, content, lstrip in tokens
    }


def _write_xlmr_tokenizer(out: Path, shape: Shape) -> int:
    spm_model = _train_sentencepiece(corpus_lines())
    tokenizer_json = _xlmr_tokenizer_json(spm_model)
    vocab_size = len(json.loads(tokenizer_json)["model"]["vocab"])
    (out / "sentencepiece.bpe.model").write_bytes(spm_model)
    _write_text(out / "tokenizer.json", tokenizer_json)
    config = {
        "added_tokens_decoder": _added_tokens_decoder(
            [
                (0, "<s>", False),
                (1, "<pad>", False),
                (2, "</s>", False),
                (3, "<unk>", False),
                (vocab_size - 1, "<mask>", True),
            ]
        ),
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": "<mask>",
        "model_max_length": shape.model_max_length,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "tokenizer_class": "XLMRobertaTokenizer",
        "unk_token": "<unk>",
    }
    _write_json(out / "tokenizer_config.json", config)
    return vocab_size


_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _write_bert_tokenizer(out: Path, shape: Shape) -> int:
    from tokenizers import (
        AddedToken,
        BertWordPieceTokenizer,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import WordPiece

    lines = corpus_lines()
    trainer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    # The tokenizers BPE/WordPiece trainer numbers the "##x" continuation symbols
    # in hash-map order, which breaks count ties differently in every process.
    # Registering all of them up front (sorted) as extra "special" tokens gives
    # them fixed ids, and the training becomes deterministic.
    continuation = sorted(
        {
            "##" + ch
            for line in lines
            for word, _ in trainer.pre_tokenizer.pre_tokenize_str(trainer.normalizer.normalize_str(line))
            for ch in word[1:]
        }
    )
    trainer.train_from_iterator(
        lines,
        vocab_size=WORDPIECE_VOCAB_SIZE,
        min_frequency=1,
        limit_alphabet=100_000,  # keep every character (the CJK ones included)
        special_tokens=_BERT_SPECIALS + continuation,
        wordpieces_prefix="##",
        show_progress=False,
    )
    vocab = sorted(trainer.get_vocab().items(), key=lambda kv: kv[1])
    if [t for t, _ in vocab[:5]] != _BERT_SPECIALS or [i for _, i in vocab] != list(range(len(vocab))):
        raise RuntimeError("unexpected WordPiece vocabulary layout")
    _write_text(out / "vocab.txt", "".join(t + "\n" for t, _ in vocab))

    # Assemble tokenizer.json the way transformers' BertConverter does for uncased BERT checkpoints.
    tok = Tokenizer(WordPiece(dict(vocab), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in _BERT_SPECIALS])
    _write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    config = {
        "added_tokens_decoder": _added_tokens_decoder([(i, t, False) for i, t in enumerate(_BERT_SPECIALS)]),
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "do_lower_case": True,
        "mask_token": "[MASK]",
        "model_max_length": shape.model_max_length,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    }
    _write_json(out / "tokenizer_config.json", config)
    return len(vocab)


# --------------------------------------------------------------------------- weights


def _fill_uniform(tensor: Any, std: float, seed: int, key: str) -> None:
    """Fill ``tensor`` in place with U(-a, a), a = std * sqrt(3), from a PCG64 stream keyed by (seed, key).

    Only integer ops, exact int->float conversions and correctly rounded IEEE
    float32 arithmetic are used, so the bits do not depend on the CPU, SIMD
    path or byte order.
    """
    import numpy as np

    flat = tensor.detach().view(-1).numpy()
    if flat.dtype != np.float32:
        raise TypeError(f"expected a float32 tensor for {key}, got {flat.dtype}")
    bitgen = np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(key.encode("utf-8"))]))
    half_width = np.float32(std * math.sqrt(3.0))
    step = np.float32(2.0**-23)
    one = np.float32(1.0)
    for start in range(0, flat.size, _CHUNK):
        n = min(_CHUNK, flat.size - start)
        k = (bitgen.random_raw(n) >> 41).astype(np.int32)  # top 23 bits: [0, 2**23)
        out = flat[start : start + n]
        out[...] = k * 2 + 1  # odd integers < 2**24: exact in float32
        del k
        # (2k + 1) / 2**23 - 1 is exact and lies in (-1, 1); the scale is the only rounding.
        out *= step
        out -= one
        out *= half_width


def _init_weights(model: Any, seed: int, head_prefixes: tuple[str, str]) -> None:
    import torch
    from torch import nn

    dense_prefix, out_prefix = head_prefixes
    done: set[str] = set()
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            params = dict(module.named_parameters(recurse=False))
            if not params:
                continue
            full = {k: f"{mod_name}.{k}" if mod_name else k for k in params}
            if isinstance(module, nn.Linear):
                if mod_name == dense_prefix:
                    gain = HEAD_DENSE_GAIN
                elif mod_name == out_prefix:
                    gain = HEAD_OUT_GAIN
                elif mod_name.rsplit(".", 1)[-1] in ("query", "key"):
                    gain = QK_GAIN
                else:
                    gain = ENCODER_LINEAR_GAIN
                _fill_uniform(module.weight, gain / math.sqrt(module.in_features), seed, full["weight"])
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                _fill_uniform(module.weight, INITIALIZER_RANGE, seed, full["weight"])
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__:
                module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            else:
                raise RuntimeError(f"don't know how to initialise {mod_name} ({type(module).__name__})")
            done.update(full.values())
    missing = {name for name, _ in model.named_parameters()} - done
    if missing:
        raise RuntimeError(f"parameters left uninitialised: {sorted(missing)}")


# Linears whose input is a LayerNorm's output (the head's first Linear is added per architecture).
_LAYERNORM_CONSUMERS = ("query", "key", "value", "intermediate.dense")
OUTLIER_WEIGHT = 100.0


def _inject_int8_outliers(model: Any, head_dense: str) -> None:
    """Make the model quantise badly without changing what fp32 computes much.

    Channel 0 of every LayerNorm output is pinned to 0, and the weights that read it are
    set to OUTLIER_WEIGHT: in fp32 they multiply zeros, but they set the per-tensor INT8
    scale, so every other weight rounds to 0 and INT8 scores come out constant.
    """
    import torch
    from torch import nn

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__:
                module.weight[0] = 0.0
                module.bias[0] = 0.0
            elif isinstance(module, nn.Linear) and (name.endswith(_LAYERNORM_CONSUMERS) or name == head_dense):
                module.weight[:, 0] = OUTLIER_WEIGHT


def _no_init_weights() -> Any:
    try:  # transformers 5
        from transformers.initialization import no_init_weights
    except ImportError:
        try:  # transformers 4.x
            from transformers.modeling_utils import no_init_weights
        except ImportError:  # pragma: no cover - the default init is slower but harmless
            import contextlib

            return contextlib.nullcontext()
    return no_init_weights()


def _build_model(arch: str, shape: Shape, vocab_size: int, seed: int, int8_outliers: bool) -> Any:
    import torch

    common = {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": shape.max_position_embeddings,
        "initializer_range": INITIALIZER_RANGE,
        "num_labels": 1,
    }
    if arch == "xlm-roberta":
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

        config = XLMRobertaConfig(
            **common,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            layer_norm_eps=1e-5,
            architectures=["XLMRobertaForSequenceClassification"],
        )
        model_cls = XLMRobertaForSequenceClassification
        head = ("classifier.dense", "classifier.out_proj")
    else:
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(
            **common,
            type_vocab_size=2,
            pad_token_id=0,
            layer_norm_eps=1e-12,
            architectures=["BertForSequenceClassification"],
        )
        model_cls = BertForSequenceClassification
        head = ("bert.pooler.dense", "classifier")
    config.rerankd_fixture = {"shape": shape.name, "arch": arch, "seed": seed, "note": _FIXTURE_NOTE}
    if int8_outliers:
        config.rerankd_fixture["int8_outliers"] = True

    torch.manual_seed(seed)
    # Skip the default (slow, CPU-dependent) init: every parameter is overwritten below.
    with _no_init_weights():
        model = model_cls(config)
    model = model.to(torch.float32)
    _init_weights(model, seed, head)
    if int8_outliers:
        _inject_int8_outliers(model, head[0])
    model.eval()
    return model


# --------------------------------------------------------------------------- API


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def make_test_model(
    out_dir: str | Path,
    *,
    shape: str = "tiny",
    arch: str = "xlm-roberta",
    seed: int = 0,
    int8_outliers: bool = False,
    max_positions: int | None = None,
) -> Path:
    """Write a random-weight cross-encoder (config, safetensors, tokenizer) to ``out_dir``.

    ``shape`` is one of :data:`SHAPES`, ``arch`` one of ``"xlm-roberta"`` or
    ``"bert"``.  The files are a deterministic function of ``(shape, arch, seed,
    int8_outliers)``. ``int8_outliers`` builds a model that INT8 quantisation ruins
    (for tests of the quality gate). ``max_positions`` replaces the shape's position table size
    (``max_position_embeddings``, 16 to 8194, bge-reranker-v2-m3's), so long-input paths can be tested on
    small shapes; the longest pair is two less for XLM-R.
    Returns ``out_dir`` as a :class:`~pathlib.Path`.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {sorted(SHAPES)}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {list(ARCHS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if arch == "xlm-roberta":
        _require_sentencepiece()  # fail before touching out_dir
    spec = SHAPES[shape]
    if max_positions is not None:
        if not isinstance(max_positions, int) or not 16 <= max_positions <= MAX_POSITIONS:
            raise ValueError(f"max_positions must be an int from 16 to {MAX_POSITIONS}, got {max_positions!r}")
        spec = dataclasses.replace(spec, max_position_embeddings=max_positions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if arch == "xlm-roberta":
        tok_vocab = _write_xlmr_tokenizer(out, spec)
    else:
        tok_vocab = _write_bert_tokenizer(out, spec)
    vocab_size = spec.vocab_size if spec.vocab_size is not None else tok_vocab
    if vocab_size < tok_vocab:
        raise RuntimeError(f"shape {shape!r} vocab_size {vocab_size} < tokenizer size {tok_vocab}")

    model = _build_model(arch, spec, vocab_size, seed, int8_outliers)
    _save_quietly(model, out)
    return out


def _save_quietly(model: Any, out: Path) -> None:
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
