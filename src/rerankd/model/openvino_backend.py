"""OpenVINO on the CPU behind the same Backend interface as torch and ONNX Runtime."""

from __future__ import annotations

import numpy as np

from rerankd.model.loading import LoadedModel
from rerankd.model.openvino_ir import import_openvino, read


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, loaded: LoadedModel, threads: int) -> None:
        ov = import_openvino()
        # An ov.Model converted at load time, or the IR of a `rerankd export --format openvino` directory.
        model = loaded.model if loaded.model is not None else read(loaded.path)
        config = {
            "INFERENCE_NUM_THREADS": threads,
            # One stream: the engine runs one batch at a time, and a batch should have every thread.
            "PERFORMANCE_HINT": "LATENCY",
            # On CPUs with AVX-512 BF16 or AMX OpenVINO computes fp32 models in bf16 unless told otherwise;
            # fp32 keeps the scores exact, and keeps an INT8 model's non-quantised layers as the gate measured them.
            "INFERENCE_PRECISION_HINT": "f32",
            # Pinned threads of several workers (or containers) would pile onto the same first cores.
            "ENABLE_CPU_PINNING": False,
        }
        compiled = ov.Core().compile_model(model, "CPU", config)
        # One request, reused: forward passes are serialised by the caller (the engine's model thread,
        # the Reranker's lock).
        self._request = compiled.create_infer_request()
        self.input_names = tuple(port.get_any_name() for port in compiled.inputs)
        self.device = "cpu"
        self.dtype = loaded.dtype

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self._request.infer({name: inputs[name] for name in self.input_names})
        # The output tensor's memory belongs to the request and is overwritten by the next batch.
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32).reshape(-1)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower() or "bad_alloc" in str(exc).lower()

    def release_memory(self) -> None:
        """OpenVINO's CPU plugin keeps its buffers; nothing to hand back."""
