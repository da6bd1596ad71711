"""Load a reranker from a local directory or the Hugging Face hub (LLM rerankers: model/causal_loading.py).

Hub downloads go through huggingface_hub, so `HF_HOME`, `HF_HUB_OFFLINE=1` and
the shared cache behave as users know them from transformers.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.device import TORCH_DTYPES, resolve_device, resolve_dtype
from rerankd.model.identity import model_identity
from rerankd.model.kinds import CROSS_ENCODER, detect_kind
from rerankd.model.openvino_ir import IR_FILE, check_int8_cpu, convert, import_openvino
from rerankd.model.quantize import bitsandbytes_8bit, quantize_dynamic_int8
from rerankd.settings import Settings

log = logging.getLogger(__name__)

# Parameter-name fragments of the classification heads transformers uses for
# *ForSequenceClassification models (XLM-R/RoBERTa: classifier.dense and
# classifier.out_proj; BERT: classifier; others: score).
_HEAD_PREFIXES = ("classifier", "score")
_ROBERTA_STYLE_POSITIONS = ("xlm-roberta", "roberta", "camembert", "xlm-roberta-xl")


@dataclass
class LoadedModel:
    """A validated model, its tokenizer, and where and how it runs."""

    source: str
    revision: str | None
    path: Path
    config: PretrainedConfig
    tokenizer: Any
    # torch: the nn.Module; openvino: the ov.Model converted at load time, or None when its backend reads the
    # exported IR; onnx: None (the backend opens its own session).
    model: Any
    device: torch.device
    dtype: str
    load_seconds: float
    identity: str
    backend: str = "torch"
    # `--backend auto` on CPU: seconds per warm-up batch of each backend it measured (rerankd.model.autoselect).
    backend_timings: dict[str, float] | None = None
    kind: str = "cross-encoder"  # see rerankd.model.kinds

    @property
    def fixture(self) -> dict[str, Any] | None:
        """Set on models made by `rerankd make-test-model`: random weights, scores are not relevance."""
        return getattr(self.config, "rerankd_fixture", None)

    @property
    def model_type(self) -> str:
        return str(self.config.model_type)

    @property
    def max_supported_length(self) -> int:
        """Longest pair the position embeddings allow (RoBERTa-style models reserve pad_token_id + 1 slots)."""
        positions = int(getattr(self.config, "max_position_embeddings", 0) or 0)
        if self.model_type in _ROBERTA_STYLE_POSITIONS:
            positions -= int(self.config.pad_token_id or 0) + 1
        tokenizer_limit = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
        limits = [n for n in (positions, tokenizer_limit) if 0 < n < 1_000_000]
        return min(limits) if limits else 512


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~", ".\\")) or source.count("/") > 1 or "\\" in source


def resolve_local_dir(source: str) -> Path | None:
    """The local directory `source` names, None for a hub id, or an error for a missing path."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise RerankdError(
                ErrorKind.MODEL_LOAD, f"model path {path.resolve()} is a file; expected a Hugging Face model directory"
            )
        if not (path / "config.json").is_file():
            raise RerankdError(
                ErrorKind.MODEL_LOAD,
                f"model directory {path.resolve()} has no config.json; expected a Hugging Face model directory "
                "(config.json, weights, tokenizer files)",
            )
        return path.resolve()
    if _looks_like_path(source):
        raise RerankdError(ErrorKind.MODEL_LOAD, f"model directory not found: {path.resolve()}")
    return None


def check_is_reranker(config: PretrainedConfig, where: str) -> None:
    """Refuse anything that is not a *ForSequenceClassification model with one label."""
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise RerankdError(
            ErrorKind.MODEL_LOAD,
            f"{where} is a {', '.join(architectures)}, not a cross-encoder reranker; expected a "
            "*ForSequenceClassification model with one label (num_labels=1), such as BAAI/bge-reranker-v2-m3",
        )
    if config.num_labels != 1:
        raise RerankdError(
            ErrorKind.MODEL_LOAD,
            f"{where} has num_labels={config.num_labels}; a reranker must output one logit per pair "
            "(a *ForSequenceClassification model with num_labels=1)",
        )


def _load_config(source: str, local_dir: Path | None, revision: str | None) -> PretrainedConfig:
    try:
        if local_dir is not None:
            return AutoConfig.from_pretrained(local_dir)
        return AutoConfig.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as exc:
        if local_dir is not None:
            raise RerankdError(ErrorKind.MODEL_LOAD, f"cannot read the config in {local_dir}: {exc}") from exc
        raise RerankdError(
            ErrorKind.MODEL_LOAD,
            f"cannot load model {source!r}: it is not a local directory, and as a hub id it could not be "
            f"fetched or found in the cache ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"On an offline host run `rerankd download {source}` where the hub is reachable, or pass a local "
            "directory.",
        ) from exc


ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx.data"  # weights of graphs over protobuf's 2 GB limit
EXPORT_INFO_FILE = "rerankd_export.json"
OPENVINO_INFO_FILE = "rerankd_openvino_export.json"  # its own, so one directory can hold both exports
_TORCH_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def export_dtype(local_dir: Path, info_name: str = EXPORT_INFO_FILE) -> str:
    """The precision an export was written in (exports older than the info file, or not ours, are fp32)."""
    info_file = local_dir / info_name
    return str(json.loads(info_file.read_text()).get("dtype", "fp32")) if info_file.is_file() else "fp32"


def _exports(local_dir: Path | None) -> dict[str, str]:
    """Backend -> precision of each export in `local_dir` whose runtime is installed."""
    found = {}
    if local_dir is not None:
        for backend, runtime, graph, info in (("onnx", "onnxruntime", ONNX_FILE, EXPORT_INFO_FILE),
                                              ("openvino", "openvino", IR_FILE, OPENVINO_INFO_FILE)):
            if (local_dir / graph).is_file() and importlib.util.find_spec(runtime) is not None:
                found[backend] = export_dtype(local_dir, info)
    return found


def backend_candidates(settings: Settings, local_dir: Path | None) -> list[str]:
    """The backends that can run this model as asked; `auto` measures them on the CPU and takes the fastest.

    On the CPU: torch when there are torch weights (or a hub id), and each installed runtime whose export in the
    directory is in the precision asked for (fp32 for `--dtype auto`). So `auto` never picks INT8 by itself, except
    for a directory that holds nothing but an INT8 export. OpenVINO's convert-at-load is not a candidate: it costs
    seconds to minutes and a second copy of the weights, so `auto` considers OpenVINO once it has been exported.
    On a GPU: torch, or the export when the directory holds nothing else.
    """
    if settings.backend != "auto":
        return [settings.backend]
    exports = _exports(local_dir)
    wanted = "fp32" if settings.dtype == "auto" else settings.dtype
    in_precision = [backend for backend, dtype in exports.items() if dtype == wanted]
    has_torch = local_dir is None or any((local_dir / name).is_file() for name in _TORCH_WEIGHTS)
    if not has_torch and exports:
        # The export's loader explains a precision it doesn't hold.
        return in_precision or list(exports)[:1]
    if resolve_device(settings.device).type != "cpu":
        return ["torch"]
    return ["torch", *in_precision]


def load_backend(settings: Settings, backend: str) -> LoadedModel:
    """Load, validate and place the model named by `settings.model` for `backend` (not auto)."""
    started = time.perf_counter()
    source = settings.model
    local_dir = resolve_local_dir(source)
    where = str(local_dir) if local_dir is not None else f"hub model {source!r}"
    config = _load_config(source, local_dir, settings.revision)
    kind = detect_kind(config, f"{source} {local_dir or ''}", settings.model_kind, where)
    if kind != CROSS_ENCODER:
        from rerankd.model.causal_loading import load_causal_model

        return load_causal_model(settings, config, kind, local_dir, where, started)
    check_is_reranker(config, where)
    if backend == "onnx":
        return _load_onnx(settings, config, local_dir, where, started)
    if backend == "openvino":
        return _load_openvino(settings, config, local_dir, where, started)
    return _load_torch(settings, config, local_dir, where, started)


def _load_torch(
    settings: Settings, config: PretrainedConfig, local_dir: Path | None, where: str, started: float
) -> LoadedModel:
    source = settings.model
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    location: str | Path = local_dir if local_dir is not None else source
    revision = None if local_dir is not None else settings.revision
    # INT8 on CPU quantises the fp32 model after loading; on CUDA bitsandbytes quantises while loading
    # and places the weights itself.
    bnb_int8 = dtype == "int8" and device.type == "cuda"
    placement = {"quantization_config": bitsandbytes_8bit(), "device_map": {"": device}} if bnb_int8 else {}
    # The layers INT8 leaves alone (embeddings, LayerNorm) stay fp16 on CUDA and fp32 on CPU.
    load_dtype = TORCH_DTYPES.get(dtype, torch.float16 if bnb_int8 else torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            location, revision=revision, dtype=load_dtype, output_loading_info=True,
            **placement,
        )
    except (OSError, ValueError) as exc:
        raise RerankdError(ErrorKind.MODEL_LOAD, f"cannot load {where}: {exc}") from exc

    missing_head = [k for k in info.get("missing_keys", ()) if k.split(".")[0] in _HEAD_PREFIXES]
    if missing_head:
        raise RerankdError(
            ErrorKind.MODEL_LOAD,
            f"{where} has no trained classification head (missing {', '.join(sorted(missing_head))}); "
            "it looks like a bare encoder saved under a classifier config, and would give random scores",
        )
    if not bnb_int8:
        model.to(device)
    model.eval()
    if dtype == "int8" and device.type == "cpu":
        model = quantize_dynamic_int8(model, tokenizer, where)
    path = local_dir if local_dir is not None else _snapshot_dir(source, revision) or Path(source)
    seconds = time.perf_counter() - started
    log.info("loaded %s on %s (%s) in %.2f s", where, device, dtype, seconds)
    return LoadedModel(
        source=source,
        revision=revision,
        path=path,
        config=config,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        load_seconds=seconds,
        identity=model_identity(source, local_dir, None if local_dir is not None else path),
    )


def _snapshot_dir(source: str, revision: str | None) -> Path | None:
    """The hub cache snapshot a model was loaded from (its name is the commit hash)."""
    from transformers.utils import cached_file

    try:
        found = cached_file(source, "config.json", revision=revision)
    except OSError:
        return None
    return Path(found).parent if found else None


def _load_onnx(
    settings: Settings, config: PretrainedConfig, local_dir: Path | None, where: str, started: float
) -> LoadedModel:
    if local_dir is None or not (local_dir / ONNX_FILE).is_file():
        raise RerankdError(
            ErrorKind.MODEL_LOAD,
            f"the onnx backend needs a directory with {ONNX_FILE}; {where} has none. Make one with "
            f"`rerankd export --model {settings.model} --out DIR`",
        )
    device = resolve_device(settings.device)
    dtype = export_dtype(local_dir)  # fixed at export
    if settings.dtype not in ("auto", dtype):
        raise RerankdError(
            ErrorKind.UNSUPPORTED,
            f"{where} is an {dtype} ONNX export; the onnx backend runs it as exported, so pass --dtype auto or "
            f"{dtype} (got --dtype {settings.dtype}), or export again with `rerankd export`",
        )
    return _load_export(settings, config, local_dir, where, started, device, dtype, "onnx")


def _load_export(
    settings: Settings, config: PretrainedConfig, local_dir: Path, where: str, started: float, device: torch.device,
    dtype: str, backend: str,
) -> LoadedModel:
    """The tokenizer and config of an exported directory; its backend reads the graph itself."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(local_dir)
    except (OSError, ValueError) as exc:
        raise RerankdError(ErrorKind.MODEL_LOAD, f"cannot load the tokenizer in {where}: {exc}") from exc
    return LoadedModel(
        source=settings.model,
        revision=None,
        path=local_dir,
        config=config,
        tokenizer=tokenizer,
        model=None,
        device=device,
        dtype=dtype,
        load_seconds=time.perf_counter() - started,
        identity=model_identity(settings.model, local_dir, None),
        backend=backend,
    )


def _load_openvino(
    settings: Settings, config: PretrainedConfig, local_dir: Path | None, where: str, started: float
) -> LoadedModel:
    """An exported IR as it is, or the transformers model converted now (to try OpenVINO without an export)."""
    if settings.device not in ("auto", "cpu"):
        raise RerankdError(ErrorKind.UNSUPPORTED, f"the openvino backend runs on the CPU; got --device {settings.device}")
    import_openvino()  # a missing package fails before a model is loaded
    exported = local_dir is not None and (local_dir / IR_FILE).is_file()
    dtype = export_dtype(local_dir, OPENVINO_INFO_FILE) if exported and local_dir is not None else "fp32"
    if settings.dtype not in ("auto", dtype):
        how = ("export again with `rerankd export --format openvino`" if exported else
               f"for INT8 export first: `rerankd export --format openvino --quantize int8 --model {settings.model} "
               "--out DIR`")
        raise RerankdError(
            ErrorKind.UNSUPPORTED,
            f"the openvino backend runs {where} in {dtype}, so pass --dtype auto or {dtype} (got --dtype "
            f"{settings.dtype}), or {how}",
        )
    if dtype == "int8":
        check_int8_cpu(f"{where} is an OpenVINO INT8 export")
    if exported and local_dir is not None:
        return _load_export(settings, config, local_dir, where, started, torch.device("cpu"), dtype, "openvino")
    torch_model = _load_torch(settings.with_changes(device="cpu", dtype="fp32"), config, local_dir, where, started)
    converting = time.perf_counter()
    model = convert(torch_model.model, torch_model.tokenizer.model_input_names)
    log.info("converted %s to OpenVINO in %.2f s (a `rerankd export --format openvino` directory skips this)",
             where, time.perf_counter() - converting)
    return replace(torch_model, model=model, backend="openvino", load_seconds=time.perf_counter() - started)
