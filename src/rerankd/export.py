"""`rerankd export`: a self-contained ONNX model directory (graph with its classification head, tokenizer, config).

Stages: torch.onnx export (fp32), optionally ONNX Runtime's transformer graph
fusions (`optimize`), optionally dynamic INT8 (`quantize`). Everything is built
in a staging directory beside the target and checked there before it is moved
in: an fp32 graph must match torch within `PARITY_TOLERANCE` on fixed pairs, an
INT8 graph must pass the rank-correlation gate of `rerankd.model.quality`.
Graphs over protobuf's 2 GB limit (the m3 shape in fp32) keep their weights in
one external-data file beside model.onnx.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rerankd.engine.batching import collate
from rerankd.engine.setup import Engine, build_engine
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.kinds import CROSS_ENCODER
from rerankd.model.loading import EXPORT_INFO_FILE, ONNX_DATA_FILE, ONNX_FILE, LoadedModel, load_model
from rerankd.model.quality import MIN_SPEARMAN, compare, enforce, reference_pairs
from rerankd.settings import Settings

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4
# ONNX Runtime's offline optimiser levels: 1 = transformer fusions (attention, LayerNorm, GELU) plus basic
# graph rewrites, portable; 2 adds extended fusions; 99 adds layout changes tied to this machine's CPU.
OPTIMIZE_LEVELS = (0, 1, 2, 99)
# Protobuf can't serialise a message over 2 GiB; stay clear of it.
_EXTERNAL_DATA_BYTES = 1_800_000_000
# Everything a model directory holds besides weights; copied as is, because transformers 5 rewrites
# tokenizer.json when it saves an XLM-R tokenizer.
_COPIED = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "vocab.txt",
    "added_tokens.json",
)
_CHECK_PAIRS = [
    ("what do giant pandas eat?", "The giant panda's diet is over 99% bamboo."),
    ("what do giant pandas eat?", "Panda Express is a fast-food chain."),
    ("大熊猫主要吃什么？", "大熊猫的食物中百分之九十九是竹子。"),
    ("a long document", "Bamboo forests cover the mountains of Sichuan. " * 80),
]


@dataclass(frozen=True)
class ExportInfo:
    """What `rerankd export` made; written beside the graph as rerankd_export.json."""

    source: str
    dtype: str  # fp32 or int8
    optimize: int
    opset: int
    max_abs_logit_diff: float  # against torch fp32 on the check pairs
    spearman: float | None  # INT8 only: rank correlation with fp32 on the reference pairs
    gate_cpu: str | None = None  # INT8 only: the CPU extensions the gate ran on (rerankd.model.quality.cpu_features)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    info: ExportInfo
    bytes: int


def export_onnx(
    settings: Settings, out_dir: Path, *, optimize: int = 0, quantize: str | None = None, force: bool = False
) -> ExportReport:
    """Export `settings.model` (torch, fp32, CPU) to `out_dir`, optionally fused and INT8-quantised."""
    if optimize not in OPTIMIZE_LEVELS:
        raise RerankdError(ErrorKind.INVALID_INPUT, f"optimize must be one of {OPTIMIZE_LEVELS}, got {optimize}")
    if quantize not in (None, "int8"):
        raise RerankdError(ErrorKind.INVALID_INPUT, f"quantize must be int8 or nothing, got {quantize!r}")
    torch_settings = settings.with_changes(backend="torch", device="cpu", dtype="fp32")
    loaded = load_model(torch_settings)
    if loaded.kind != CROSS_ENCODER:
        raise RerankdError(
            ErrorKind.UNSUPPORTED,
            f"{settings.model} is a {loaded.kind} (an LLM reranker); ONNX export covers cross-encoders only. "
            "Serve it with the torch backend (docs/models.md)",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        work = staging / "work"
        work.mkdir()
        graph = _torch_export(loaded, work)
        if optimize:
            graph = _optimize(graph, loaded, optimize)
        if quantize:
            graph = _quantize_int8(graph)
        _save_graph(graph, staging)
        shutil.rmtree(work)
        for name in _COPIED:
            if (loaded.path / name).is_file():
                shutil.copy(loaded.path / name, staging / name)
        info = _check(torch_settings, loaded, staging, settings.model, optimize, quantize, force)
        (staging / EXPORT_INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n")
        out_dir.mkdir(exist_ok=True)
        (out_dir / ONNX_DATA_FILE).unlink(missing_ok=True)  # a previous export's weights must not linger
        for file in staging.iterdir():
            os.replace(file, out_dir / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    return ExportReport(out_dir, info, size)


def _torch_export(loaded: LoadedModel, work: Path) -> Path:
    assert loaded.model is not None
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in loaded.tokenizer.model_input_names]
    sample = {name: torch.ones((2, 8), dtype=torch.long) for name in names}
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    path = _stage_path(work, "exported")
    # The eager attention graph (MatMul, Softmax) is the pattern ONNX Runtime's attention fusion knows;
    # SDPA's exported form is not fused.
    loaded.model.set_attn_implementation("eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Over 2 GB the exporter writes one external file per tensor beside the graph; _save_graph gathers them.
        torch.onnx.export(
            loaded.model,
            (),
            str(path),
            kwargs=sample,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def _stage_path(work: Path, stage: str) -> Path:
    """Each stage's graph in a folder of its own, next to its external data files if it has any."""
    (work / stage).mkdir()
    return work / stage / ONNX_FILE


def _large(graph: Path) -> bool:
    return sum(p.stat().st_size for p in graph.parent.iterdir() if p.is_file()) > _EXTERNAL_DATA_BYTES


def _optimize(graph: Path, loaded: LoadedModel, level: int) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    config = loaded.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # BERT's fusion patterns cover the RoBERTa family too (same encoder layer).
        model = optimize_model(str(graph), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=level)
    log.info("ONNX Runtime fusions: %s", {k: v for k, v in model.get_fused_operator_statistics().items() if v})
    out = _stage_path(graph.parent.parent, "optimized")
    model.save_model_to_file(str(out), use_external_data_format=_large(graph))
    return out


def _quantize_int8(graph: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = _stage_path(graph.parent.parent, "int8")
    # Signed per-channel weights in 7 bits (reduce_range). Without VNNI, ONNX Runtime multiplies u8 activations
    # by s8 weights with VPMADDUBSW, whose 16-bit sums of two products saturate on full-range weights: the
    # mini fixture fell from Spearman 0.98 to 0.43 on AVX2. 7-bit weights can't saturate and keep the u8s8
    # kernels' speed (u8u8, the other safe form, ran 30% slower); docs/backends.md has the figures. The gate
    # runs on the exporting CPU only, so the graph must be safe on every CPU it may be served on.
    # ONNX's shape inference can't see through ORT's fused operators, so tensors it can't type are declared
    # fp32 (all of them are, before quantisation).
    with _without_preprocessing_advice():
        quantize_dynamic(graph, out, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         use_external_data_format=_large(graph),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return out


class _DropPreprocessingAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """ORT's quantiser warns on the root logger to run its image-model pre-processing, which doesn't apply here."""
    advice = _DropPreprocessingAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _save_graph(graph: Path, staging: Path) -> None:
    """model.onnx in `staging`: one file, or with its weights in one external file when too big for one."""
    import onnx

    large = _large(graph)
    if not large and [p.name for p in graph.parent.iterdir()] == [graph.name]:
        shutil.copy(graph, staging / ONNX_FILE)
        return
    # Gather the weights, wherever a stage put them (the exporter: one file per tensor), into one place.
    model = onnx.load(str(graph), load_external_data=True)
    if large:
        onnx.save_model(model, str(staging / ONNX_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=ONNX_DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(model, str(staging / ONNX_FILE))


def _check(
    torch_settings: Settings, loaded: LoadedModel, staging: Path, source: str, optimize: int, quantize: str | None,
    force: bool,
) -> ExportInfo:
    """Score the check pairs (fp32) or the reference pairs (INT8) with torch and with the staged graph."""
    onnx_settings = torch_settings.with_changes(model=str(staging), backend="onnx", dtype="auto")
    pairs = list(reference_pairs()) if quantize else _CHECK_PAIRS
    reference, candidate = (
        _logits(build_engine(s, model), pairs)
        for s, model in ((torch_settings, loaded), (onnx_settings, load_model(onnx_settings)))
    )
    diff = float(np.max(np.abs(reference - candidate)))
    if quantize:
        report = compare(reference, candidate)
        enforce(report, f"the INT8 ONNX export of {source}", MIN_SPEARMAN, force)
        return ExportInfo(source, "int8", optimize, OPSET, diff, report.spearman, report.cpu)
    if diff > PARITY_TOLERANCE:
        raise RerankdError(
            ErrorKind.INFERENCE,
            f"the ONNX export of {source} differs from torch by {diff:.2e} in the logits "
            f"(more than {PARITY_TOLERANCE:g}); not using it",
        )
    return ExportInfo(source, "fp32", optimize, OPSET, diff, None)


def _logits(engine: Engine, pairs: list[tuple[str, str]]) -> np.ndarray:
    encoded = engine.encoder.encode_pairs(pairs)
    return engine.scorer.backend.forward(collate(encoded, engine.encoder.pad_id, engine.encoder.with_token_types))
