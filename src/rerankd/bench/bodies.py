"""Request bodies: the bytes a load generator sends and how many pairs they ask for.

Callers build the bodies (benchmarks/workload.py makes the documents); this
module only encodes them once, before a phase starts, so the event loop spends
no time on JSON while it is timing requests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestBody:
    """One request body, encoded.

    Attributes:
        content: The JSON bytes sent as the POST body.
        pairs: Query-document pairs the body asks for (its documents, or a TEI body's texts); the unit of
            goodput.

    Example:
        >>> body = RequestBody.from_json({"query": "q", "documents": ["a", "b"]})
        >>> body.pairs
        2
    """

    content: bytes
    pairs: int

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> RequestBody:
        """Encode a JSON object; its pairs are counted from `documents` (or `texts`)."""
        return cls(json.dumps(payload, ensure_ascii=False).encode(), count_pairs(payload))

    @classmethod
    def from_bytes(cls, content: bytes) -> RequestBody:
        """Wrap encoded bytes; the pairs are counted by parsing them once (0 when they are not a JSON object)."""
        try:
            payload = json.loads(content)
        except ValueError:
            return cls(content, 0)
        return cls(content, count_pairs(payload))


BodyLike = RequestBody | bytes | Mapping[str, Any]
"""What the loops accept: an encoded body, raw JSON bytes, or a JSON object."""


def count_pairs(payload: Any) -> int:
    """Pairs asked for by a rerank body: the length of `documents` (Cohere, Jina, vLLM) or `texts` (TEI).

    Example:
        >>> count_pairs({"query": "q", "texts": ["a", "b", "c"]})
        3
    """
    if not isinstance(payload, Mapping):
        return 0
    for key in ("documents", "texts"):
        value = payload.get(key)
        if isinstance(value, list):
            return len(value)
    return 0


def as_body(body: BodyLike) -> RequestBody:
    """Normalise any accepted body form to a `RequestBody`.

    Example:
        >>> as_body(b'{"query": "q", "documents": ["a"]}').pairs
        1
    """
    if isinstance(body, RequestBody):
        return body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return RequestBody.from_bytes(bytes(body))
    if isinstance(body, Mapping):
        return RequestBody.from_json(body)
    raise TypeError(f"a request body must be RequestBody, bytes or a mapping, got {type(body).__name__}")


def rerank_body(query: str, documents: Sequence[str], *, return_documents: bool = False,
                **fields: Any) -> RequestBody:
    """The body of a `/v1/rerank` request (Cohere/Jina/vLLM shape).

    Args:
        query: The query.
        documents: The documents to score against it; one pair each.
        return_documents: Whether the answer should echo the documents (off: smaller answers, less client work).
        **fields: Other body fields, e.g. `top_n` or `model`.

    Example:
        >>> rerank_body("pandas?", ["bamboo", "fast food"]).pairs
        2
    """
    return RequestBody.from_json({"query": query, "documents": list(documents),
                                  "return_documents": return_documents, **fields})
