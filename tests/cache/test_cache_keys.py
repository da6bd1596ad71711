"""Cache keys cover every field that moves a score, and can't collide across field boundaries."""

from __future__ import annotations

from rerankd.cache import CacheKeyer


def keyer(**changes) -> CacheKeyer:
    fields = {"identity": "dir:abc", "backend": "torch", "dtype": "fp32", "max_length": 512, "query_max_length": 384}
    return CacheKeyer(**{**fields, **changes})


def test_different_query_document_splits_never_collide():
    k = keyer()
    assert k.key("ab", "c", None, None, "truncate") != k.key("a", "bc", None, None, "truncate")
    assert k.key("a\0", "b", None, None, "truncate") != k.key("a", "\0b", None, None, "truncate")
    assert k.key("", "ab", None, None, "truncate") != k.key("ab", "", None, None, "truncate")


def test_every_field_is_part_of_the_key():
    base = keyer().key("q", "d", None, None, "truncate")
    assert base == keyer().key("q", "d", None, None, "truncate")
    variants = [
        keyer(identity="dir:other").key("q", "d", None, None, "truncate"),
        keyer(backend="onnx").key("q", "d", None, None, "truncate"),
        keyer(dtype="fp16").key("q", "d", None, None, "truncate"),
        keyer(max_length=256).key("q", "d", None, None, "truncate"),
        keyer(query_max_length=100).key("q", "d", None, None, "truncate"),
        keyer().key("q", "d", 128, None, "truncate"),
        keyer().key("q", "d", None, 64, "truncate"),
        keyer().key("q", "d", None, None, "error"),
        keyer().key("Q", "d", None, None, "truncate"),
        keyer().key("q", "D", None, None, "truncate"),
        keyer(kind="qwen3-reranker").key("q", "d", None, None, "truncate"),
        keyer().key("q", "d", None, None, "truncate", "an instruction"),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_a_missing_cap_and_a_value_that_prints_like_it_differ():
    from rerankd.cache.keys import _field

    assert _field(None) != _field("None") and _field(None) != _field("")
