"""Cache keys: a hash over an unambiguous, length-prefixed encoding of everything that moves a score.

Each field is written as its byte length then its bytes, so no two different
(query, document) splits - or any other field boundaries - can encode alike.
"""

from __future__ import annotations

import hashlib
import struct

KEY_VERSION = b"rerankd-cache-v1"


def _field(value: str | int | None) -> bytes:
    data = b"" if value is None else str(value).encode("utf-8")
    kind = b"n" if value is None else b"s"
    return kind + struct.pack(">Q", len(data)) + data


class CacheKeyer:
    """Keys for one served model; the per-request truncation options go into every key."""

    def __init__(
        self, identity: str, backend: str, dtype: str, max_length: int, query_max_length: int,
        kind: str = "cross-encoder",
    ) -> None:
        self._prefix = b"".join(
            _field(v) for v in (KEY_VERSION.decode(), identity, backend, dtype, max_length, query_max_length, kind)
        )

    def key(
        self,
        query: str,
        document: str,
        max_length: int | None,
        max_document_tokens: int | None,
        truncation: str,
        instruction: str | None = None,
    ) -> bytes:
        """`instruction`: an LLM reranker's instruction or prompt as applied (its default included)."""
        encoded = b"".join(
            (self._prefix, _field(max_length), _field(max_document_tokens), _field(truncation),
             _field(query), _field(document), _field(instruction))
        )
        return hashlib.blake2b(encoded, digest_size=20).digest()
