"""Load an LLM reranker: a causal LM (Qwen3-Reranker, bge-reranker-v2-gemma) with its tokenizer, on torch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.device import TORCH_DTYPES, resolve_device
from rerankd.model.identity import model_identity
from rerankd.model.loading import LoadedModel, _snapshot_dir
from rerankd.settings import Settings

log = logging.getLogger(__name__)


def load_causal_model(
    settings: Settings, config: PretrainedConfig, kind: str, local_dir: Path | None, where: str, started: float
) -> LoadedModel:
    """Torch only, in fp32 on the CPU and bf16 on a GPU by default: these models were trained in bf16, and
    fp16's range is too narrow for some of their activations."""
    if settings.backend == "onnx":
        raise RerankdError(ErrorKind.UNSUPPORTED,
                           f"{where} is a {kind}; the onnx backend runs cross-encoders only, use --backend torch")
    device = resolve_device(settings.device)
    dtype = settings.dtype if settings.dtype != "auto" else ("fp32" if device.type == "cpu" else "bf16")
    if dtype not in TORCH_DTYPES:
        raise RerankdError(ErrorKind.UNSUPPORTED,
                           f"--dtype {dtype} is not offered for {kind} models; use fp32, bf16 or fp16")
    location: str | Path = local_dir if local_dir is not None else settings.model
    revision = None if local_dir is not None else settings.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(location, revision=revision, dtype=TORCH_DTYPES[dtype])
    except (OSError, ValueError) as exc:
        raise RerankdError(ErrorKind.MODEL_LOAD, f"cannot load {where}: {exc}") from exc
    model.to(device)
    model.eval()
    path = local_dir if local_dir is not None else _snapshot_dir(settings.model, revision) or Path(settings.model)
    seconds = time.perf_counter() - started
    log.info("loaded %s (%s) on %s (%s) in %.2f s", where, kind, device, dtype, seconds)
    return LoadedModel(
        source=settings.model,
        revision=revision,
        path=path,
        config=config,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        load_seconds=seconds,
        identity=model_identity(settings.model, local_dir, None if local_dir is not None else path),
        kind=kind,
    )
