"""INT8 for the torch backend: dynamic quantisation on CPU, bitsandbytes 8-bit on CUDA."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.quality import MIN_SPEARMAN, compare, enforce, reference_pairs

log = logging.getLogger(__name__)


def quantize_dynamic_int8(model: torch.nn.Module, tokenizer: Any, what: str) -> torch.nn.Module:
    """INT8 weights and per-batch INT8 activations for every Linear layer, after the quality gate.

    torch 2.10+ marks `torch.ao` quantisation deprecated in favour of torchao, but it is
    still the only CPU INT8 path that needs no extra package; its warnings are silenced.
    Its x86 kernels quantise activations to 7 bits (`reduce_range`), so unlike ONNX Runtime's
    default they can't saturate without VNNI: the gate measured within 0.01 on AVX2 (docs/backends.md).
    """
    reference = _reference_logits(model, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantised = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        report = compare(reference, _reference_logits(quantised, tokenizer))
    enforce(report, f"the dynamic INT8 quantisation of {what}", MIN_SPEARMAN, force=False)
    return quantised


def _reference_logits(model: torch.nn.Module, tokenizer: Any) -> Any:
    queries, documents = zip(*reference_pairs())
    inputs = tokenizer(list(queries), list(documents), padding=True, truncation="only_second", max_length=512,
                       return_tensors="pt")
    with torch.inference_mode():
        return model(**inputs).logits.float().reshape(-1).numpy()


def bitsandbytes_8bit() -> Any:
    """transformers' config for LLM.int8() weights on CUDA, or a clear error when bitsandbytes is missing."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RerankdError(
            ErrorKind.UNSUPPORTED,
            "--dtype int8 on CUDA uses bitsandbytes 8-bit weights: pip install bitsandbytes "
            "(or use --dtype fp16, the default on CUDA)",
        ) from exc
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True)
