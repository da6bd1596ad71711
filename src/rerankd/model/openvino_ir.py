"""OpenVINO IR: converting a transformers model, reading and writing it, INT8 through NNCF.

Kept apart from the backend so that loading (which converts a torch model at load
time) and export (which writes one) use it without importing each other.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.quality import cpu_features

# optimum-intel's names, so directories it writes load too.
IR_FILE = "openvino_model.xml"
IR_WEIGHTS_FILE = "openvino_model.bin"
# x86 extensions with an INT8 dot product that doesn't saturate (cpu_features' names).
_VNNI = {"avx512_vnni", "avx_vnni", "amx_int8"}


def import_openvino() -> Any:
    """The `openvino` module, or an error that names the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise RerankdError(
            ErrorKind.UNSUPPORTED, "the openvino backend needs OpenVINO: pip install 'rerankd[openvino]'"
        ) from exc
    return openvino


def convert(model: torch.nn.Module, input_names: Sequence[str]) -> Any:
    """The transformers model as an OpenVINO model, classification head included, batch and width dynamic."""
    ov = import_openvino()
    example = {name: torch.ones((2, 8), dtype=torch.long) for name in input_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        # The example fixes no dimension: inputs come out [?, ?], as batches vary in size and width.
        converted = ov.convert_model(model, example_input=example)
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted


def read(directory: Path) -> Any:
    return import_openvino().Core().read_model(directory / IR_FILE)


def save(model: Any, directory: Path) -> None:
    # OpenVINO halves fp32 weights to fp16 on save by default; that would cost the 1e-4 parity.
    import_openvino().save_model(model, directory / IR_FILE, compress_to_fp16=False)


def quantize_int8(model: Any, calibration: Sequence[dict[str, np.ndarray]]) -> Any:
    """Static INT8 (weights and activations) calibrated on `calibration`'s batches.

    Weights are held to 7 bits (NNCF's overflow fix, on every layer): without VNNI, x86 multiplies u8 activations
    by s8 weights with VPMADDUBSW, whose 16-bit pair sums saturate on full-range weights - the ONNX INT8 export
    lost most of its ranking that way on AVX2 (docs/backends.md). The gate runs only on the exporting CPU, so the
    model must be safe on every CPU it may be served on.
    """
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    except ImportError as exc:
        raise RerankdError(
            ErrorKind.UNSUPPORTED, "OpenVINO INT8 export needs NNCF: pip install 'rerankd[openvino]'"
        ) from exc
    names = [port.get_any_name() for port in model.inputs]
    dataset = nncf.Dataset([{name: batch[name] for name in names} for batch in calibration])
    return nncf.quantize(
        model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
    )


def check_int8_cpu(what: str) -> None:
    """Refuse OpenVINO INT8 on x86 without VNNI, where it ranks far from fp32.

    On an AVX2-only CPU (emulated; docs/backends.md) the NNCF INT8 export of our tiny fixture fell from Spearman
    0.98 to 0.75 against fp32, though its matrix weights are 7-bit (mini held at 0.96); the ONNX INT8 exports held
    on both. The gate runs on the exporting CPU only, so an export that passed it on VNNI could rank that badly
    on the CPU that serves it.
    """
    features = set(cpu_features().split(", "))
    if "avx2" in features and not features & _VNNI:
        raise RerankdError(
            ErrorKind.UNSUPPORTED,
            f"{what}: OpenVINO INT8 needs a CPU with VNNI, and this one has {cpu_features()}; without VNNI its INT8 "
            "ranked the quality gate's pairs of one of our test models at Spearman 0.75 against fp32 (docs/backends.md). "
            "Use OpenVINO "
            "fp32, or an ONNX INT8 export (`rerankd export --quantize int8`), which holds on every CPU",
        )
