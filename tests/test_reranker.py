"""The library API: order, ranking, ties, threads and async."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import PAIRS

from rerankd import RerankdError, RerankResult
from rerankd.engine import sigmoid

DOCS = [d for _, d in PAIRS]


def test_compute_score_returns_scores_in_input_order(reranker):
    scores = reranker.compute_score(PAIRS)
    reversed_scores = reranker.compute_score(PAIRS[::-1])
    assert len(scores) == len(PAIRS)
    assert scores == pytest.approx(reversed_scores[::-1], abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_raw_logits_and_normalized_scores_agree(reranker):
    logits = reranker.compute_score(PAIRS, normalize=False)
    scores = reranker.compute_score(PAIRS)
    assert any(x < 0 for x in logits) or any(x > 1 for x in logits)
    assert scores == pytest.approx([float(sigmoid(x)) for x in logits], abs=1e-9)


def test_rerank_sorts_best_first_and_keeps_the_original_index(reranker):
    results = reranker.rerank("What do giant pandas eat?", DOCS)
    scores = reranker.compute_score([("What do giant pandas eat?", d) for d in DOCS])
    assert [r.score for r in results] == sorted(scores, reverse=True)
    assert all(isinstance(r, RerankResult) and r.document == DOCS[r.index] for r in results)
    assert sorted(r.index for r in results) == list(range(len(DOCS)))


@pytest.mark.parametrize(("top_n", "expected"), [(None, 9), (0, 9), (3, 3), (100, 9)])
def test_top_n_zero_none_or_too_large_means_all(reranker, top_n, expected):
    assert len(reranker.rerank("q", DOCS, top_n=top_n)) == expected


def test_equal_scores_keep_input_order(reranker):
    results = reranker.rerank("q", ["same text", "other", "same text", "same text"])
    same = [r.index for r in results if r.document == "same text"]
    assert same == [0, 2, 3]


def test_empty_inputs_are_scored_not_crashed_on(reranker):
    assert reranker.rerank("q", []) == []
    assert reranker.compute_score([]) == []
    assert len(reranker.compute_score([("", ""), ("q", "")])) == 2


def test_bad_input_is_a_clear_error(reranker):
    with pytest.raises(RerankdError, match=r"documents\[1\] must be a string"):
        reranker.rerank("q", ["ok", None])
    with pytest.raises(RerankdError, match="wrap a single pair"):
        reranker.compute_score(("q", "d"))
    with pytest.raises(RerankdError, match="top_n must be 0 or more"):
        reranker.rerank("q", ["d"], top_n=-1)


def test_one_reranker_is_safe_to_share_between_threads(reranker):
    expected = reranker.compute_score(PAIRS)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: reranker.compute_score(PAIRS), range(12)))
    for scores in results:
        assert scores == pytest.approx(expected, abs=1e-6)


def test_async_calls_do_not_block_the_event_loop(reranker):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(reranker.arerank("q", DOCS * 20, top_n=2) for _ in range(4)))
        scores = await reranker.acompute_score(PAIRS)
        task.cancel()
        return results, scores, ticks

    results, scores, ticks = asyncio.run(main())
    assert all(len(r) == 2 for r in results) and len(scores) == len(PAIRS)
    assert ticks > 0


def test_report_counts_tokens_truncation_and_time(reranker):
    report = reranker.score_query("q", ["short", " ".join(["word"] * 2000)])
    assert report.truncated == [False, True]
    assert report.num_tokens[1] == 512
    assert report.tokenize_seconds > 0 and report.inference_seconds > 0 and report.batches >= 1
    assert not math.isnan(report.scores()[1])


def test_half_precision_on_cpu_still_scores_close_to_fp32(xlmr_dir, reranker):
    from rerankd import Reranker

    bf16 = Reranker(str(xlmr_dir), device="cpu", dtype="bf16").compute_score(PAIRS[:4])
    assert bf16 == pytest.approx(reranker.compute_score(PAIRS[:4]), abs=0.05)
