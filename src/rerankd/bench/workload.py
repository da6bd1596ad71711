"""What a load generator sends: deterministic documents of known lengths, or the user's own requests.

Generated documents are runs of words from the bundled English corpus (the one the
fixture tokenizers were trained on), so they tokenize like real text. The mixed length profile is
what RAG retrieval hands a reranker: 20% short passages of 20-60 words, 60% medium
ones of 80-200 words, 20% long ones of 250-450 words (cut to `--max-length` by the
server). The server's `usage` says how many tokens each request really was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections import deque
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

QUERY = "How do giant pandas survive on a diet of bamboo in the mountains?"
MIXED = "mixed"


@functools.cache
def corpus_words() -> tuple[str, ...]:
    text = (resources.files("rerankd.corpus") / "en.txt").read_text(encoding="utf-8")
    return tuple(re.findall(r"\S+", text))


def mixed_documents(count: int, seed: int = 0) -> list[str]:
    """`count` documents with the mixed RAG length profile; the same seed gives the same documents.

    Example:
        >>> docs = mixed_documents(100, seed=1)
        >>> docs == mixed_documents(100, seed=1), 20 <= min(len(d.split()) for d in docs)
        (True, True)
    """
    rng = random.Random(seed)
    words = corpus_words()
    docs = []
    for _ in range(count):
        bucket = rng.random()
        low, high = (20, 60) if bucket < 0.2 else (80, 200) if bucket < 0.8 else (250, 450)
        n = rng.randint(low, high)
        start = rng.randrange(0, len(words) - n)
        docs.append(" ".join(words[start : start + n]))
    return docs


def fixed_documents(count: int, words: int, seed: int = 0) -> list[str]:
    """`count` documents of exactly `words` words each.

    Example:
        >>> {len(d.split()) for d in fixed_documents(10, 150)}
        {150}
    """
    rng = random.Random(seed)
    corpus = corpus_words()
    starts = [rng.randrange(0, len(corpus) - words) for _ in range(count)]
    return [" ".join(corpus[s : s + words]) for s in starts]


class DocumentStream:
    """Distinct documents made on demand, so no document is sent twice in a run and a score cache can't help.

    Args:
        seed: Seed of the stream; the same seed gives the same documents in the same order.
        words: `MIXED` for the mixed length profile, or the number of words of every document.
        chunk: Documents made at a time.

    Example:
        >>> stream = DocumentStream(seed=0, words=50)
        >>> first, second = stream.take(3), stream.take(3)
        >>> len(set(first + second)), {len(d.split()) for d in first}
        (6, {50})
    """

    def __init__(self, seed: int, words: int | str = MIXED, chunk: int = 4096) -> None:
        if words != MIXED and not (isinstance(words, int) and 1 <= words < len(corpus_words())):
            raise ValueError(f"words must be {MIXED!r} or a positive number of words, got {words!r}")
        self._seed = seed
        self._words = words
        self._chunk = chunk
        self._chunks = 0
        self._seen: set[bytes] = set()
        self._ready: deque[str] = deque()

    def take(self, n: int) -> list[str]:
        while len(self._ready) < n:
            # Seeds of later chunks are far from any seed a user would pass, so streams of nearby seeds differ.
            seed = self._seed * 1_000_003 + self._chunks
            made = (mixed_documents(self._chunk, seed) if self._words == MIXED
                    else fixed_documents(self._chunk, int(self._words), seed))
            for doc in made:
                digest = hashlib.blake2b(doc.encode(), digest_size=16).digest()
                if digest not in self._seen:
                    self._seen.add(digest)
                    self._ready.append(doc)
            self._chunks += 1
        return [self._ready.popleft() for _ in range(n)]


def read_requests(path: str | Path) -> list[tuple[str, list[str]]]:
    """The (query, documents) of each line of a JSON-lines file: `{"query": "...", "documents": ["...", ...]}`.

    `texts` (TEI's name) is read as `documents` too; blank lines are skipped.

    Raises:
        ValueError: naming the line, when one is not such an object or the file holds none.
    """
    requests = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            documents = record.get("documents", record.get("texts")) if isinstance(record, dict) else None
            if not (isinstance(documents, list) and documents and all(isinstance(d, str) for d in documents)
                    and isinstance(record.get("query"), str)):
                raise ValueError(f'{path}:{number}: expected {{"query": "...", "documents": ["...", ...]}} with at '
                                 "least one document, all strings")
            requests.append((record["query"], documents))
    if not requests:
        raise ValueError(f"{path}: no requests in the file")
    return requests


def generated_requests(documents: int, words: int | str, seed: int) -> Iterator[tuple[str, list[str]]]:
    """Endless (query, documents) pairs: the fixed query and `documents` fresh documents from a `DocumentStream`."""
    stream = DocumentStream(seed, words)
    while True:
        yield QUERY, stream.take(documents)
