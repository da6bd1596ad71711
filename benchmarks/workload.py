"""Deterministic mixed-length documents for benchmarks.

The length mix is what RAG retrieval hands a reranker: 20% short passages of
20-60 words, 60% medium ones of 80-200 words, 20% long ones of 250-450 words
(cut to 512 tokens by the reranker). Words come from the fixture tokenizer's
training corpus, so they tokenize like real text.
"""

from __future__ import annotations

import random
import re
from importlib import resources

QUERY = "How do giant pandas survive on a diet of bamboo in the mountains?"


def _words() -> list[str]:
    text = (resources.files("rerankd.corpus") / "en.txt").read_text(encoding="utf-8")
    return re.findall(r"\S+", text)


def mixed_documents(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = _words()
    docs = []
    for _ in range(count):
        bucket = rng.random()
        low, high = (20, 60) if bucket < 0.2 else (80, 200) if bucket < 0.8 else (250, 450)
        n = rng.randint(low, high)
        start = rng.randrange(0, len(words) - n)
        docs.append(" ".join(words[start : start + n]))
    return docs
