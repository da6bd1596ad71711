"""rerankd: fast, exact cross-encoder reranking (BAAI/bge-reranker-v2-m3 and friends)."""

from rerankd.errors import ErrorKind, RerankdError
from rerankd.reranker import Reranker, RerankResult, ScoreReport
from rerankd.settings import DEFAULT_MODEL, Settings

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
