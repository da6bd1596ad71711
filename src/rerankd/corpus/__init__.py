"""Bundled English and Chinese text, shipped as package data.

The fixture tokenizers are trained on it and the INT8 quality gate draws its
reference pairs from it. It sits below every other layer so that runtime code
can read it without importing the test fixtures.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["CORPUS_FILES", "corpus_lines"]

CORPUS_FILES = ("en.txt", "zh.txt")


def corpus_lines() -> list[str]:
    """The corpus, one stripped non-empty line per entry, in a fixed order."""
    root = resources.files(__name__)
    lines: list[str] = []
    for name in CORPUS_FILES:
        try:
            text = root.joinpath(name).read_bytes().decode("utf-8")
        except FileNotFoundError as exc:
            raise RuntimeError(
                f"rerankd.corpus file {name!r} not found: is the package data (rerankd/corpus/*.txt) installed?"
            ) from exc
        for line in text.splitlines():
            line = line.strip()
            if line:
                lines.append(line)
    if not lines:
        raise RuntimeError("rerankd.corpus is missing or empty (package data not installed?)")
    return lines
