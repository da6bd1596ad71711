"""One settings object for every entry point.

Precedence is defaults < environment (`RERANKD_<FLAG_IN_UPPER_SNAKE>`) < CLI
flags. The CLI builds its options from the field metadata below, so a flag,
its environment variable and its help text can't drift apart. Library users
pass the same names as keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from rerankd.errors import ErrorKind, RerankdError

DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "fp16", "bf16")


def _flag(help: str, *, choices: tuple[str, ...] | None = None, metavar: str | None = None) -> dict[str, Any]:
    return {"help": help, "choices": choices, "metavar": metavar}


@dataclass(frozen=True)
class Settings:
    model: str = field(
        default=DEFAULT_MODEL,
        metadata=_flag("Hugging Face hub id or local directory of a one-label cross-encoder.", metavar="ID|DIR"),
    )
    revision: str | None = field(
        default=None, metadata=_flag("Hub revision (branch, tag or commit) for hub models.", metavar="REV")
    )
    device: str = field(
        default="auto", metadata=_flag("Where the model runs; auto picks cuda, then mps, then cpu.", choices=DEVICES)
    )
    dtype: str = field(
        default="auto", metadata=_flag("Weights precision; auto is fp16 on CUDA and fp32 elsewhere.", choices=DTYPES)
    )
    max_length: int = field(
        default=512, metadata=_flag("Most tokens per (query, document) pair; only the document is cut to fit.")
    )
    query_max_length: int | None = field(
        default=None, metadata=_flag("Most tokens kept of the query (default: 3/4 of --max-length).")
    )
    max_batch_tokens: int = field(
        default=16384,
        metadata=_flag("Token budget of one model batch, counted as rows x longest row (padding included)."),
    )
    max_batch_size: int = field(default=128, metadata=_flag("Most pairs in one model batch, whatever their length."))
    threads: int | None = field(
        default=None, metadata=_flag("Intra-op threads for the model on CPU (default: the library's choice).")
    )

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise _invalid(f"max_length must be at least 8, got {self.max_length}")
        if self.query_max_length is not None and not 1 <= self.query_max_length < self.max_length:
            raise _invalid(
                f"query_max_length must be between 1 and max_length - 1 ({self.max_length - 1}), "
                f"got {self.query_max_length}"
            )
        for name in ("max_batch_tokens", "max_batch_size"):
            if getattr(self, name) < 1:
                raise _invalid(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise _invalid(f"threads must be at least 1, got {self.threads}")
        if self.device not in DEVICES and not self.device.startswith(("cuda:", "mps:")):
            raise _invalid(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise _invalid(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def effective_query_max_length(self) -> int:
        """FlagEmbedding's rule: the query alone may use 3/4 of the pair's budget."""
        return self.query_max_length if self.query_max_length is not None else self.max_length * 3 // 4

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)


SETTING_NAMES = tuple(f.name for f in fields(Settings))


def _invalid(message: str) -> RerankdError:
    return RerankdError(ErrorKind.INVALID_INPUT, message)
