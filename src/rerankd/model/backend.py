"""The backend interface the engine scores through, and its torch implementation.

The engine hands a backend padded int64 arrays and gets one fp32 logit per
row back; it never learns which runtime produced them.
"""

from __future__ import annotations

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

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {
            name: torch.from_numpy(array).to(self._device, non_blocking=True)
            for name, array in inputs.items()
            if name in self.input_names
        }
        with torch.inference_mode():
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
