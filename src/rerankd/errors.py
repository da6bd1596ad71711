"""The one error type rerankd raises on purpose.

Every failure a user can cause or fix (bad input, a model that isn't a
reranker, a device that isn't there) is a `RerankdError` with an `ErrorKind`.
Front ends translate the kind once: the CLI into an exit message, the HTTP
layer into a status code.
"""

from __future__ import annotations

import enum


class ErrorKind(str, enum.Enum):
    INVALID_INPUT = "invalid_input"
    MODEL_LOAD = "model_load"
    MODEL_NOT_FOUND = "model_not_found"
    INPUT_TOO_LARGE = "input_too_large"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"
    INFERENCE = "inference"


class RerankdError(Exception):
    """A failure with a message that says what to fix."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        # Seconds after which a retry may succeed (overload), for HTTP's Retry-After.
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"RerankdError({self.kind.value!r}, {self.message!r})"
