"""The scoring engine: encode pairs, batch them by tokens, run them through a backend."""

from rerankd.engine.batching import collate, plan_batches
from rerankd.engine.encoding import EncodedPair, PairEncoder
from rerankd.engine.scoring import BatchScorer, BatchStats, sigmoid

__all__ = ["BatchScorer", "BatchStats", "EncodedPair", "PairEncoder", "collate", "plan_batches", "sigmoid"]
