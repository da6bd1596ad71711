"""Candidates to rerank: BM25 over the corpus (bm25s), or the user's own TREC run file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import bm25s
import ir_measures
from bm25s.tokenization import Tokenizer

from rerankd.errors import ErrorKind, RerankdError
from rerankd.evaluation.data import Dataset

# bm25s sets its logger to DEBUG on import; let it follow the level `--log-level` gives the root logger.
logging.getLogger("bm25s").setLevel(logging.NOTSET)

Run = dict[str, dict[str, float]]  # query id -> document id -> score, what ir-measures reads

# Chinese and Japanese are written without spaces: kana and CJK ideographs (Hangul is spaced, so it stays
# in words). bm25s's default pattern would make a whole Chinese sentence one token.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORDS = re.compile(rf"[{_CJK}]+|[^\W{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]")


def split_words(text: str) -> list[str]:
    """Words of spaced scripts; each run of CJK characters as its characters and its bigrams.

    Characters find single-character words (吃, 竹); bigrams reward the two-character words most Chinese
    words are (熊猫, 竹子) without a dictionary.
    """
    tokens: list[str] = []
    for match in _WORDS.finditer(text):
        word = match.group()
        if _CJK_RUN.match(word):
            tokens += list(word) + [word[i : i + 2] for i in range(len(word) - 1)]
        else:
            tokens.append(word)
    return tokens


def bm25_run(data: Dataset, query_ids: list[str], k: int) -> Run:
    """The top `k` documents of the corpus by BM25 for each query (fewer when the corpus is smaller)."""
    doc_ids = list(data.corpus)
    tokenizer = Tokenizer(splitter=split_words, stopwords="en")
    corpus_tokens = tokenizer.tokenize([data.corpus[d] for d in doc_ids], return_as="tuple", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = tokenizer.tokenize(
        [data.queries[q] for q in query_ids], update_vocab=False, return_as="ids", show_progress=False
    )
    found, scores = retriever.retrieve(query_tokens, k=min(k, len(doc_ids)), show_progress=False, n_threads=1)
    return {
        qid: {doc_ids[d]: float(s) for d, s in zip(found[row], scores[row], strict=True)}
        for row, qid in enumerate(query_ids)
    }


def read_run(path: str | Path, data: Dataset, query_ids: list[str], k: int) -> Run:
    """The best `k` documents of each query in a TREC run file (`qid Q0 docid rank score tag`)."""
    run: Run = {qid: {} for qid in query_ids}
    try:
        for row in ir_measures.read_trec_run(str(path)):
            if row.query_id in run:
                if row.doc_id not in data.corpus:
                    raise RerankdError(
                        ErrorKind.INVALID_INPUT,
                        f"{path}: document {row.doc_id!r} (query {row.query_id!r}) is not in the corpus",
                    )
                run[row.query_id][row.doc_id] = float(row.score)
    except (ValueError, IndexError) as exc:
        raise RerankdError(
            ErrorKind.INVALID_INPUT, f"{path} is not a TREC run file (qid Q0 docid rank score tag): {exc}"
        ) from None
    return {qid: dict(sorted(docs.items(), key=lambda d: -d[1])[:k]) for qid, docs in run.items()}


def write_run(path: Path, run: Run, tag: str) -> None:
    """`run` as a TREC run file, best first; ties keep the order of `run`."""
    with path.open("w", encoding="utf-8") as out:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda d: -d[1])
            for rank, (doc, score) in enumerate(ranked, start=1):
                out.write(f"{qid} Q0 {doc} {rank} {score:.9g} {tag}\n")
