"""Test helpers for rerankd: a deterministic random-weight cross-encoder fixture."""

from rerankd.testing.fixture import SHAPES, Shape, make_test_model

__all__ = ["SHAPES", "Shape", "make_test_model"]
