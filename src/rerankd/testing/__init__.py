"""Test helpers for rerankd: deterministic random-weight cross-encoder and LLM-reranker fixtures."""

from rerankd.testing.causal_fixture import CAUSAL_SHAPES, make_causal_test_model
from rerankd.testing.fixture import SHAPES, Shape, make_test_model

__all__ = ["CAUSAL_SHAPES", "SHAPES", "Shape", "make_causal_test_model", "make_test_model"]
