"""Long documents with the LLM kinds: each window is scored exactly as the pair (query, window text), with the
query, the instruction and the template whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.engine.chunking import ChunkPolicy, chunk_pairs
from rerankd.engine.llm_encoding import check_lengths
from rerankd.errors import ErrorKind, RerankdError
from rerankd.testing import make_causal_test_model

TOL = 1e-5
QUERY = "what do giant pandas eat?"
INSTRUCTION = "Find the passage that answers the question"
LONG = " ".join(f"Giant pandas eat bamboo shoots, report {i} says, and rest in the forest." for i in range(24))


@pytest.fixture(scope="module", params=["qwen3", "gemma"])
def reranker(request, tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    path: Path = make_causal_test_model(tmp_path_factory.mktemp(request.param), shape="tiny", arch=request.param)
    return Reranker(str(path), device="cpu", max_length=192, truncation="chunk", max_chunks_per_doc=64)


def test_each_window_scores_as_the_pair_of_its_text(reranker):
    report = reranker.score_query(QUERY, [LONG, "bamboo"], instruction=INSTRUCTION)
    long, short = report.chunks
    assert long.chunks > 2 and short.chunks == 1 and report.truncated == [False, False]
    texts = [LONG[w.start:w.end] for w in long.windows]
    assert all(b.start < a.end for a, b in zip(long.windows, long.windows[1:]))  # windows overlap
    assert long.windows[0].start == 0 and long.windows[-1].end == len(LONG)
    # The reference: each window's text as an ordinary pair, which must fit whole (error mode).
    reference = reranker.score([(QUERY, t) for t in texts], truncation="error", instruction=INSTRUCTION).logits
    np.testing.assert_allclose([w.logit for w in long.windows], reference, atol=TOL)
    assert report.logits[0] == pytest.approx(max(reference), abs=TOL)
    whole = reranker.score([(QUERY, "bamboo")], truncation="error", instruction=INSTRUCTION).logits[0]
    assert report.logits[1] == pytest.approx(whole, abs=TOL)


def test_windows_keep_the_query_and_instruction_whole(reranker):
    encoder = reranker.encoder
    (document,) = chunk_pairs(encoder, [(QUERY, LONG)], ChunkPolicy(overlap=8, max_chunks=64), None, None,
                              INSTRUCTION)
    for window in document.windows:
        (expected,) = encoder.encode_pairs([(QUERY, LONG[window.start:window.end])], instruction=INSTRUCTION)
        assert window.pair.input_ids == expected.input_ids and not expected.truncated


def test_max_chunks_cuts_and_reports_it(reranker):
    policy = ChunkPolicy(max_chunks=2)
    (document,) = chunk_pairs(reranker.encoder, [(QUERY, LONG)], policy, None, None, INSTRUCTION)
    assert len(document.windows) == 2 and document.truncated


def test_an_llm_kind_refuses_to_keep_the_end(reranker):
    with pytest.raises(RerankdError) as caught:
        check_lengths(reranker.encoder, "end")
    assert caught.value.kind is ErrorKind.INVALID_INPUT and reranker.encoder.kind in caught.value.message
