"""rerankd: fast, exact cross-encoder reranking (BAAI/bge-reranker-v2-m3 and friends)."""

from typing import TYPE_CHECKING, Any

from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from rerankd.reranker import Reranker, RerankResult, ScoreReport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "ErrorKind",
    "RerankResult",
    "Reranker",
    "RerankdError",
    "ScoreReport",
    "Settings",
    "__version__",
]

_LIBRARY = ("Reranker", "RerankResult", "ScoreReport")


def __getattr__(name: str) -> Any:
    # The library API pulls in torch; importing it on first use keeps `rerankd.bench` (a load generator
    # with no model) and the package's light modules quick to import.
    if name in _LIBRARY:
        from rerankd import reranker

        return getattr(reranker, name)
    raise AttributeError(f"module 'rerankd' has no attribute {name!r}")
