"""Pick the device and precision the model runs with."""

from __future__ import annotations

import logging

import torch

from rerankd.errors import ErrorKind, RerankdError

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """`auto` prefers CUDA, then Apple MPS, then the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RerankdError(
            ErrorKind.UNSUPPORTED,
            f"device {device!r} was asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto",
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RerankdError(ErrorKind.UNSUPPORTED, f"device {device!r} was asked for, but MPS is not available here")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """`auto` is fp16 on CUDA (the speed users expect there) and fp32 elsewhere."""
    if dtype == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if dtype == "int8" and device.type not in ("cpu", "cuda"):
        raise RerankdError(
            ErrorKind.UNSUPPORTED, f"--dtype int8 runs on cpu (dynamic quantisation) or cuda (bitsandbytes), not {device}"
        )
    if dtype in ("fp16", "bf16") and device.type == "cpu":
        log.warning(
            "%s on CPU runs, but usually several times slower than fp32 on CPUs without native half-precision "
            "matrix units; prefer --dtype fp32 on CPU",
            dtype,
        )
    return dtype
