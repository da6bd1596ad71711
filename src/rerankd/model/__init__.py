"""Model loading and the backends that run a loaded model."""

from rerankd.model.autoselect import load_model
from rerankd.model.backend import Backend, TorchBackend
from rerankd.model.loading import LoadedModel

__all__ = ["Backend", "LoadedModel", "TorchBackend", "load_model"]
