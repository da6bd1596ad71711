"""A short, stable identity for a model's weights, for cache keys.

A hub model is its id plus the commit its snapshot came from. A local
directory is a hash over its config and samples of each weight file (size,
first, middle and last MiB): two directories with different weights differ in
all of those places, and hashing a 2 GB file whole would add seconds to every
start.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx.data", ".onnx_data", ".pt")
_SAMPLE = 1 << 20


def directory_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)):
        size = file.stat().st_size
        digest.update(str(file.relative_to(path)).encode() + b"\0" + str(size).encode())
        with file.open("rb") as handle:
            for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
                handle.seek(offset)
                digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()[:32]


def model_identity(source: str, local_dir: Path | None, snapshot_dir: Path | None) -> str:
    if local_dir is not None:
        return f"dir:{directory_fingerprint(local_dir)}"
    commit = snapshot_dir.name if snapshot_dir is not None else "unknown"
    return f"hub:{source}@{commit}"
