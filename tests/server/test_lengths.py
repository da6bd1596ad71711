"""Which length field wins when one body carries several (the table in docs/api.md)."""

from __future__ import annotations

import pytest

from rerankd.errors import RerankdError
from rerankd.server.lengths import resolve_lengths
from rerankd.server.schemas import RerankRequest
from rerankd.settings import Settings

SETTINGS = Settings(model="m", truncation="error", max_chunks_per_doc=8, chunk_overlap=32)


def lengths(tei_truncate: bool | None = None, keep_end: bool = False, **fields):  # type: ignore[no-untyped-def]
    body = RerankRequest(query="q", documents=["d"], **fields)
    return resolve_lengths(body, SETTINGS, tei_truncate=tei_truncate, keep_end=keep_end)


def test_the_server_mode_applies_when_the_body_names_none() -> None:
    resolved = lengths()
    assert (resolved.truncation, resolved.keep, resolved.max_length, resolved.max_document_tokens) == (
        "error", "start", None, None)
    assert (resolved.chunking.overlap, resolved.chunking.max_chunks) == (32, 8)


def test_truncation_wins_over_tei_truncate_which_wins_over_max_chunks_per_doc() -> None:
    assert lengths(tei_truncate=False, truncation="chunk", max_chunks_per_doc=2).truncation == "chunk"
    assert lengths(tei_truncate=True, max_chunks_per_doc=2).truncation == "truncate"
    assert lengths(tei_truncate=False).truncation == "error"
    assert lengths(max_chunks_per_doc=2).truncation == "chunk"


def test_a_client_may_ask_for_fewer_windows_than_the_server_allows_not_more() -> None:
    assert lengths(max_chunks_per_doc=2).chunking.max_chunks == 2
    assert lengths(max_chunks_per_doc=100).chunking.max_chunks == 8


def test_caps_map_to_the_pair_and_the_document() -> None:
    resolved = lengths(truncate_prompt_tokens=128, max_tokens_per_doc=300, chunk_overlap=0, chunk_aggregate="mean")
    assert (resolved.max_length, resolved.max_document_tokens) == (128, 300)
    assert (resolved.chunking.overlap, resolved.chunking.aggregate) == (0, "mean")
    assert lengths(truncate_prompt_tokens=-1).max_length is None


def test_left_keeps_the_end_and_is_refused_with_chunk() -> None:
    assert lengths(keep_end=True, truncation="truncate").keep == "end"
    with pytest.raises(RerankdError, match="truncation_direction"):
        lengths(keep_end=True, truncation="chunk")
