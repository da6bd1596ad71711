"""`rerankd export`: a self-contained ONNX model directory (graph with its classification head, tokenizer, config).

The export is checked before it is kept: a fixed set of pairs is scored by the
torch model and by ONNX Runtime on the written file, and the largest logit
difference is reported (and must be within `PARITY_TOLERANCE`).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rerankd.engine.batching import collate
from rerankd.engine.setup import build_engine
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.loading import ONNX_FILE, LoadedModel, load_model
from rerankd.settings import Settings

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4
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
class ExportReport:
    path: Path
    max_abs_logit_diff: float
    bytes: int


def export_onnx(settings: Settings, out_dir: Path) -> ExportReport:
    """Export `settings.model` (torch, fp32, CPU) to `out_dir`."""
    torch_settings = settings.with_changes(backend="torch", device="cpu", dtype="fp32")
    loaded = load_model(torch_settings)
    assert loaded.model is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in loaded.tokenizer.model_input_names]
    sample = {name: torch.ones((2, 8), dtype=torch.long) for name in names}
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            loaded.model,
            (),
            str(out_dir / ONNX_FILE),
            kwargs=sample,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    for name in _COPIED:
        if (loaded.path / name).is_file():
            shutil.copy(loaded.path / name, out_dir / name)

    diff = _parity(torch_settings, loaded, out_dir)
    if diff > PARITY_TOLERANCE:
        raise RerankdError(
            ErrorKind.INFERENCE,
            f"the ONNX export of {settings.model} differs from torch by {diff:.2e} in the logits "
            f"(more than {PARITY_TOLERANCE:g}); not using it",
        )
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    return ExportReport(out_dir, diff, size)


def _parity(torch_settings: Settings, loaded: LoadedModel, out_dir: Path) -> float:
    """Largest logit difference between the torch model in hand and the written export."""
    onnx_settings = torch_settings.with_changes(model=str(out_dir), backend="onnx")
    results = []
    for engine in (build_engine(torch_settings, loaded), build_engine(onnx_settings, load_model(onnx_settings))):
        pairs = engine.encoder.encode_pairs(_CHECK_PAIRS)
        batch = collate(pairs, engine.encoder.pad_id, engine.encoder.with_token_types)
        results.append(engine.scorer.backend.forward(batch))
    return float(np.max(np.abs(results[0] - results[1])))
