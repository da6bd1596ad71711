"""Rerank first-stage candidates with one configuration of the model, and time it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rerankd.evaluation.data import Dataset
from rerankd.evaluation.first_stage import Run
from rerankd.reranker import Reranker


@dataclass(frozen=True)
class Reranked:
    run: Run  # query id -> document id -> logit
    pairs: int
    seconds: float  # tokenization and inference, model loading left out

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


def rerank_run(
    reranker: Reranker, data: Dataset, candidates: Run, on_batch: Callable[[int], None] | None = None
) -> Reranked:
    """Each query's candidates scored by `reranker`; the run holds logits, whose order is the ranking."""
    run: Run = {}
    pairs = 0
    started = time.perf_counter()
    for qid, docs in candidates.items():
        doc_ids = list(docs)
        report = reranker.score_query(data.queries[qid], [data.corpus[d] for d in doc_ids], on_batch=on_batch)
        run[qid] = {d: float(v) for d, v in zip(doc_ids, report.logits, strict=True)}
        pairs += len(doc_ids)
    return Reranked(run, pairs, time.perf_counter() - started)
