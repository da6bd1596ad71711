"""The backend interface the engine scores through, and its torch implementation.

The engine hands a backend padded int64 arrays and gets one fp32 logit per
row back; it never learns which runtime produced them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from rerankd.model.loading import LoadedModel


class Backend(Protocol):
    name: str
    device: str
    dtype: str

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Logits of one padded batch, as a float32 vector with one entry per row."""
        ...

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether `exc` means the batch did not fit and a smaller one may."""
        ...

    def release_memory(self) -> None:
        """Give cached accelerator memory back after an out-of-memory error."""
        ...


class TorchBackend:
    """Runs a transformers *ForSequenceClassification model in eval mode."""

    name = "torch"

    def __init__(self, loaded: LoadedModel) -> None:
        self._model = loaded.model
        self._device = loaded.device
        self.device = str(loaded.device)
        self.dtype = loaded.dtype
        self.input_names = tuple(loaded.tokenizer.model_input_names)
        # On the CPU in fp32 (and int8, whose activations stay fp32) torch sends a few element-wise ops, GELU
        # among them, to oneDNN, which keeps a compiled kernel per input shape. Batches built from whatever is
        # queued come in endless shapes, and those long-lived kernels, allocated between each batch's
        # activations, keep the allocator from giving memory back: a server's RSS grew from 0.9 to 1.2 GiB
        # over 20 minutes (benchmarks/bench_soak.py). torch's own kernels for those ops measured as fast.
        # bf16 and fp16 keep oneDNN: their matrix products need it.
        self._onednn = not (loaded.device.type == "cpu" and loaded.dtype in ("fp32", "int8"))

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {
            name: torch.from_numpy(array).to(self._device, non_blocking=True)
            for name, array in inputs.items()
            if name in self.input_names
        }
        with torch.inference_mode(), _onednn(self._onednn):
            logits = self._model(**tensors).logits
        # The logit leaves half precision here: the sigmoid downstream runs in
        # fp32 or better so that scores near 0 and 1 don't tie.
        return logits.float().reshape(-1).cpu().numpy()

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
        )

    def release_memory(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        elif self._device.type == "mps":
            torch.mps.empty_cache()


@contextlib.contextmanager
def _onednn(enabled: bool) -> Iterator[None]:
    """oneDNN on or off for one forward pass; torch's other oneDNN settings stay as they are."""
    before = torch.backends.mkldnn.set_flags(enabled, None, None, None)
    try:
        yield
    finally:
        torch.backends.mkldnn.set_flags(*before)
