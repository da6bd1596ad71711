"""Make the backend that runs a loaded model: the one place that maps a backend name to its class."""

from __future__ import annotations

import torch

from rerankd.model.backend import Backend, TorchBackend
from rerankd.model.loading import LoadedModel
from rerankd.model.onnx_backend import OnnxBackend
from rerankd.model.openvino_backend import OpenVinoBackend


def use_threads(loaded: LoadedModel, threads: int) -> None:
    """`threads` intra-op threads for torch on the CPU (process-wide: torch has no per-model setting)."""
    if loaded.device.type == "cpu":
        torch.set_num_threads(threads)


def create_backend(loaded: LoadedModel, threads: int) -> Backend:
    """The backend for a cross-encoder `loaded`, with `threads` intra-op threads on the CPU."""
    use_threads(loaded, threads)
    if loaded.backend == "onnx":
        return OnnxBackend(loaded, threads)
    if loaded.backend == "openvino":
        return OpenVinoBackend(loaded, threads)
    return TorchBackend(loaded)
