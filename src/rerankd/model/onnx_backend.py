"""ONNX Runtime behind the same Backend interface as torch."""

from __future__ import annotations

import numpy as np

from rerankd.errors import ErrorKind, RerankdError
from rerankd.model.loading import ONNX_FILE, LoadedModel


class OnnxBackend:
    name = "onnx"

    def __init__(self, loaded: LoadedModel, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RerankdError(
                ErrorKind.UNSUPPORTED, "the onnx backend needs onnxruntime: pip install 'rerankd[onnx]'"
            ) from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if loaded.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(str(loaded.path / ONNX_FILE), options, providers=providers)
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.device = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
        self.dtype = loaded.dtype

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: inputs[name] for name in self.input_names}
        (logits,) = self._session.run(["logits"], feed)
        return np.asarray(logits, dtype=np.float32).reshape(-1)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower() or "bad_alloc" in str(exc).lower()

    def release_memory(self) -> None:
        """ONNX Runtime's arena keeps its memory; nothing to hand back."""
