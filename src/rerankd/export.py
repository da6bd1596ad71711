"""`rerankd export`: a self-contained ONNX or OpenVINO model directory (graph with its classification head,
tokenizer, config).

ONNX stages: torch.onnx export (fp32), optionally ONNX Runtime's transformer graph
fusions (`optimize`), optionally dynamic INT8 (`quantize`). OpenVINO: conversion
from the transformers model (fp32), optionally static INT8 through NNCF calibrated
on corpus pairs. Everything is built in a staging directory beside the target and
checked there before it is moved in: an fp32 graph must match torch within
`PARITY_TOLERANCE` on fixed pairs, an INT8 graph must pass the rank-correlation
gate of `rerankd.model.quality`. ONNX graphs over protobuf's 2 GB limit (the m3
shape in fp32) keep their weights in one external-data file beside model.onnx.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rerankd.corpus import corpus_lines
from rerankd.engine.batching import collate
from rerankd.engine.setup import Engine, build_engine
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model import load_model, openvino_ir
from rerankd.model.kinds import CROSS_ENCODER
from rerankd.model.loading import EXPORT_INFO_FILE, ONNX_DATA_FILE, ONNX_FILE, OPENVINO_INFO_FILE, LoadedModel
from rerankd.model.quality import MIN_SPEARMAN, compare, enforce, reference_pairs
from rerankd.settings import Settings

log = logging.getLogger(__name__)

OPSET = 17
FORMATS = {"onnx": ("ONNX", EXPORT_INFO_FILE), "openvino": ("OpenVINO", OPENVINO_INFO_FILE)}  # label, info file
PARITY_TOLERANCE = 1e-4
# NNCF's statistics for OpenVINO INT8: 64 pairs in 16 batches.
_CALIBRATION_PAIRS = 64
_CALIBRATION_BATCH = 4
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
    optimize: int  # ONNX only
    opset: int | None  # ONNX only
    max_abs_logit_diff: float  # against torch fp32 on the check pairs
    spearman: float | None  # INT8 only: rank correlation with fp32 on the reference pairs
    gate_cpu: str | None = None  # INT8 only: the CPU extensions the gate ran on (rerankd.model.quality.cpu_features)
    format: str = "onnx"  # or openvino


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

    def write(staging: Path) -> None:
        work = staging / "work"
        work.mkdir()
        graph = _torch_export(loaded, work)
        if optimize:
            graph = _optimize(graph, loaded, optimize)
        if quantize:
            graph = _quantize_int8(graph)
        _save_graph(graph, staging)
        shutil.rmtree(work)

    info = ExportInfo(settings.model, quantize or "fp32", optimize, OPSET, 0.0, None)
    # A previous export's external weights must not linger beside a graph that has none.
    return _export(torch_settings, loaded, out_dir, write, info, force, stale=(ONNX_DATA_FILE,))


def export_openvino(settings: Settings, out_dir: Path, *, quantize: str | None = None, force: bool = False
                    ) -> ExportReport:
    """Convert `settings.model` (torch, fp32) to OpenVINO IR in `out_dir`, optionally INT8 through NNCF."""
    if quantize not in (None, "int8"):
        raise RerankdError(ErrorKind.INVALID_INPUT, f"quantize must be int8 or nothing, got {quantize!r}")
    if quantize:
        openvino_ir.check_int8_cpu(f"cannot export {settings.model} to OpenVINO INT8")
    torch_settings = settings.with_changes(backend="torch", device="cpu", dtype="fp32")
    loaded = load_model(torch_settings)

    def write(staging: Path) -> None:
        model = openvino_ir.convert(loaded.model, loaded.tokenizer.model_input_names)
        if quantize:
            model = openvino_ir.quantize_int8(model, _calibration_batches(build_engine(torch_settings, loaded)))
        openvino_ir.save(model, staging)

    info = ExportInfo(settings.model, quantize or "fp32", 0, None, 0.0, None, format="openvino")
    return _export(torch_settings, loaded, out_dir, write, info, force)


def _export(torch_settings: Settings, loaded: LoadedModel, out_dir: Path, write: Callable[[Path], None],
            planned: ExportInfo, force: bool, stale: tuple[str, ...] = ()) -> ExportReport:
    """Write the graph (`write`) and the tokenizer files to a staging directory, check them, then move them in."""
    if loaded.kind != CROSS_ENCODER:
        raise RerankdError(
            ErrorKind.UNSUPPORTED,
            f"{torch_settings.model} is a {loaded.kind} (an LLM reranker); {FORMATS[planned.format][0]} export "
            "covers cross-encoders only. Serve it with the torch backend (docs/models.md)",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        write(staging)
        for name in _COPIED:
            if (loaded.path / name).is_file():
                shutil.copy(loaded.path / name, staging / name)
        info = _check(torch_settings, loaded, staging, planned, force)
        (staging / FORMATS[info.format][1]).write_text(json.dumps(asdict(info), indent=2) + "\n")
        size = sum(p.stat().st_size for p in staging.iterdir() if p.is_file())
        out_dir.mkdir(exist_ok=True)
        for name in stale:
            (out_dir / name).unlink(missing_ok=True)
        for file in staging.iterdir():
            os.replace(file, out_dir / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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


def _check(torch_settings: Settings, loaded: LoadedModel, staging: Path, planned: ExportInfo, force: bool
           ) -> ExportInfo:
    """Score the check pairs (fp32) or the reference pairs (INT8) with torch and with the staged graph."""
    label = FORMATS[planned.format][0]
    staged_settings = torch_settings.with_changes(model=str(staging), backend=planned.format, dtype="auto")
    int8 = planned.dtype == "int8"
    pairs = list(reference_pairs()) if int8 else _CHECK_PAIRS
    reference, candidate = (
        _logits(build_engine(s, model), pairs)
        for s, model in ((torch_settings, loaded), (staged_settings, load_model(staged_settings)))
    )
    diff = float(np.max(np.abs(reference - candidate)))
    if int8:
        report = compare(reference, candidate)
        enforce(report, f"the INT8 {label} export of {planned.source}", MIN_SPEARMAN, force)
        return replace(planned, max_abs_logit_diff=diff, spearman=report.spearman, gate_cpu=report.cpu)
    if diff > PARITY_TOLERANCE:
        raise RerankdError(
            ErrorKind.INFERENCE,
            f"the {label} export of {planned.source} differs from torch by {diff:.2e} in the logits "
            f"(more than {PARITY_TOLERANCE:g}); not using it",
        )
    return replace(planned, max_abs_logit_diff=diff)


def _calibration_batches(engine: Engine) -> list[dict[str, np.ndarray]]:
    """INT8 calibration: batches of English and Chinese corpus pairs that the quality gate's reference set doesn't
    hold, so the gate judges the model on pairs it was not calibrated on."""
    reference = {text for pair in reference_pairs() for text in pair}
    lines = [line for line in corpus_lines()[1::3] if line not in reference][:_CALIBRATION_PAIRS + 4]
    queries, documents = lines[:4], lines[4:]
    pairs = [(queries[i % len(queries)], document) for i, document in enumerate(documents)]
    encoded = engine.encoder.encode_pairs(pairs)
    return [collate(encoded[i:i + _CALIBRATION_BATCH], engine.encoder.pad_id, engine.encoder.with_token_types)
            for i in range(0, len(encoded), _CALIBRATION_BATCH)]


def _logits(engine: Engine, pairs: list[tuple[str, str]]) -> np.ndarray:
    encoded = engine.encoder.encode_pairs(pairs)
    return engine.scorer.backend.forward(collate(encoded, engine.encoder.pad_id, engine.encoder.with_token_types))
