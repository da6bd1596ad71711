"""Relevance from logits: the sigmoid, or a Platt-scaling calibration fitted by `rerankd calibrate`.

A calibration file holds `sigmoid(a * logit + b)`'s two numbers. The plain sigmoid is the same map with
a=1, b=0, so every model has one: `SIGMOID` unless a file was given for it. The slope is never negative,
so a calibrated score keeps the model's order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerankd.engine.scoring import sigmoid
from rerankd.errors import ErrorKind, RerankdError

FORMAT = "rerankd-calibration/1"


@dataclass(frozen=True)
class Calibration:
    """`relevance(logits) = sigmoid(a * logits + b)`; `source` is the file it came from, if any."""

    a: float = 1.0
    b: float = 0.0
    source: str | None = None

    def relevance(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * np.asarray(logits, dtype=np.float64) + self.b)

    def to_json(self, **extra: object) -> str:
        """The file `rerankd calibrate --fit-platt` writes; `extra` (model, data sizes) is informative only."""
        return json.dumps({"format": FORMAT, "method": "platt", "a": self.a, "b": self.b, **extra}, indent=2) + "\n"

    @classmethod
    def from_file(cls, path: str | Path) -> Calibration:
        where = f"calibration file {str(path)!r}"
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"{where} can't be read: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"{where} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RerankdError(
                ErrorKind.INVALID_INPUT, f"{where} is not a rerankd calibration ({FORMAT}); make one with "
                "`rerankd calibrate --fit-platt`"
            )
        a, b = data.get("a"), data.get("b")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)) or a < 0:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"{where} needs finite numbers 'a' >= 0 and 'b'")
        return cls(float(a), float(b), str(path))


SIGMOID = Calibration()


def calibration_files(entries: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """`--calibration` entries (`NAME=FILE`, or a bare `FILE` when one model is served) -> {model name: file}.

    Raises:
        RerankdError: INVALID_INPUT for a name that is not served, a bare file with several models, or a model
            named twice.
    """
    files: dict[str, str] = {}
    for entry in entries:
        name, sep, file = entry.partition("=")
        if not sep or name not in names:
            # With one model a bare FILE may hold a '=' of its own, as long as it exists.
            if len(names) != 1 or (sep and not Path(entry).exists()):
                raise RerankdError(
                    ErrorKind.INVALID_INPUT,
                    f"--calibration {entry!r}: expected NAME=FILE with NAME one of the served models "
                    f"({', '.join(names)}), or a bare FILE when one model is served",
                )
            name, file = names[0], entry
        if name in files:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"--calibration names model {name!r} twice")
        files[name] = file
    return files


def load_calibrations(entries: Sequence[str], names: Sequence[str]) -> dict[str, Calibration]:
    """Every served model's calibration: the file given for it, else `SIGMOID`."""
    files = calibration_files(entries, names)
    return {name: Calibration.from_file(files[name]) if name in files else SIGMOID for name in names}
