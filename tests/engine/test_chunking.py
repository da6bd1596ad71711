"""Long documents in windows: the window rule, exactness against FlagEmbedding, bounded tokenization."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import LONG_EN, LONG_ZH
from test_parity import flag_reranker_reference

from rerankd import Reranker
from rerankd.cache import CacheKeyer, MemoryCache
from rerankd.engine import PairEncoder
from rerankd.engine.admission import InFlightLimit
from rerankd.engine.chunking import ChunkPolicy, aggregate, chunk_pairs
from rerankd.engine.scheduler import FairQueue, Job
from rerankd.engine.service import ScoringService
from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import Settings
from rerankd.telemetry import NO_METRICS

QUERY = "where do pandas live?"
# Words of every kind the tokenizers split differently: English, digits, punctuation, accents and Chinese.
MIXED = " ".join(
    f"Line {i}: the panda's café (naïve) eats 3.5 kg of bamboo — 熊猫吃竹子 {i * 7}; see https://example.org/p{i}."
    for i in range(40)
)


@pytest.fixture(scope="module", params=["xlm-roberta", "bert"])
def short_reranker(request, xlmr_dir, bert_dir):
    model_dir = xlmr_dir if request.param == "xlm-roberta" else bert_dir
    return model_dir, Reranker(str(model_dir), device="cpu", max_length=64, truncation="chunk", chunk_overlap=8)


def test_each_window_scores_as_its_text_alone_under_flag_embedding_semantics(short_reranker):
    model_dir, reranker = short_reranker
    documents = [MIXED, LONG_EN, "a short document about pandas"]
    report = reranker.score_query(QUERY, documents)
    texts, logits = [], []
    for doc, chunked in zip(documents, report.chunks, strict=True):
        for window in chunked.windows:
            texts.append(doc[window.start:window.end])
            logits.append(window.logit)
    assert report.chunks[0].chunks > 5 and report.chunks[2].chunks == 1
    reference = flag_reranker_reference(model_dir, [(QUERY, t) for t in texts], 64, 48)
    assert max(abs(1 / (1 + math.exp(-a)) - b) for a, b in zip(logits, reference, strict=True)) < 1e-5


def test_window_text_tokenizes_alone_to_the_window_ids(short_reranker):
    _, reranker = short_reranker
    encoder = reranker.encoder
    documents = chunk_pairs(encoder, [(QUERY, MIXED), (QUERY, LONG_EN)], ChunkPolicy(overlap=8, max_chunks=100), 64)
    for doc, chunked in zip([MIXED, LONG_EN], documents, strict=True):
        assert not chunked.truncated
        query_ids = encoder.token_ids([QUERY])[0]
        for window in chunked.windows:
            ids, _ = encoder.template.build(query_ids, encoder.token_ids([doc[window.start:window.end]])[0],
                                            encoder.with_token_types)
            assert ids == window.pair.input_ids
            assert window.pair.num_tokens <= 64
        # Windows cover the document in order, each starting before the last one ended (they overlap).
        starts = [w.start for w in chunked.windows]
        assert starts == sorted(starts) and chunked.windows[-1].end >= len(doc.rstrip(".")) - 1


def test_windows_stop_at_max_chunks_and_the_rest_is_reported_truncated(reranker):
    policy = ChunkPolicy(overlap=8, max_chunks=3)
    [chunked] = chunk_pairs(reranker.encoder, [(QUERY, LONG_EN)], policy, 64)
    assert len(chunked.windows) == 3 and chunked.truncated
    [whole] = chunk_pairs(reranker.encoder, [(QUERY, LONG_EN)], ChunkPolicy(overlap=8, max_chunks=1000), 64)
    assert not whole.truncated
    assert [w.pair.input_ids for w in whole.windows[:3]] == [w.pair.input_ids for w in chunked.windows]


def test_a_document_is_tokenized_only_as_far_as_its_windows_reach(reranker, monkeypatch):
    encoder = reranker.encoder
    seen: list[int] = []
    encode = encoder._encode
    monkeypatch.setattr(encoder, "_encode", lambda texts: seen.extend(map(len, texts)) or encode(texts))
    huge = LONG_EN * 50  # about 60k tokens
    chunk_pairs(encoder, [(QUERY, huge)], ChunkPolicy(overlap=8, max_chunks=2), 64)
    assert max(seen) < len(huge) / 20


def test_a_short_document_is_one_window_whose_highlight_covers_it(reranker):
    text = "Pandas eat bamboo."
    [chunked] = chunk_pairs(reranker.encoder, [(QUERY, text)], ChunkPolicy())
    [window] = chunked.windows
    assert (window.start, window.end) == (0, len(text)) and not chunked.truncated
    assert window.pair.input_ids == reranker.encoder.encode(QUERY, [text])[0].input_ids


def test_max_and_mean_aggregate_the_window_logits(reranker):
    documents = chunk_pairs(reranker.encoder, [(QUERY, MIXED), (QUERY, "short")], ChunkPolicy(overlap=8), 64)
    logits = np.arange(sum(len(d.windows) for d in documents), dtype=np.float32)[::-1].copy()
    n = len(documents[0].windows)
    best, short = aggregate(documents, logits, "max")
    assert best.logit == logits[0] and best.highlight == best.windows[0] and short.chunks == 1
    mean, _ = aggregate(documents, logits, "mean")
    assert mean.logit == pytest.approx(float(np.mean(logits[:n])))
    assert mean.highlight == best.highlight  # the highlight is the best window whatever the aggregate


def test_left_truncation_keeps_the_end_of_the_document(reranker):
    encoder = reranker.encoder
    [pair] = encoder.encode(QUERY, [LONG_EN], keep="end")
    query_ids, doc_ids = encoder.token_ids([QUERY, LONG_EN])
    room = encoder.max_length - encoder.template.num_special_tokens - len(query_ids)
    assert pair.input_ids == encoder.template.build(query_ids, doc_ids[-room:], False)[0]
    assert pair.truncated


# --- the service: windows are ordinary pairs for the cache and the scheduler ----------------------------------


def service_of(reranker: Reranker, cache=None) -> ScoringService:
    settings = Settings(model="fixture", max_length=64, truncation="chunk", chunk_overlap=8)
    encoder = PairEncoder(reranker.loaded.tokenizer, 64, 48)
    keyer = CacheKeyer("fixture", "torch", "fp32", 64, 48)
    return ScoringService("m", settings, encoder, reranker.scorer, keyer, cache, ThreadPoolExecutor(1),
                          InFlightLimit(4), NO_METRICS)


def test_the_service_scores_chunked_documents_as_the_library_does_and_caches_each_window(reranker):
    cache = MemoryCache(10_000, NO_METRICS)
    served = service_of(reranker, cache)
    served.warm_up()
    library = Reranker.from_settings(served.settings.with_changes(model=str(reranker.loaded.path), device="cpu"))
    documents = [MIXED, LONG_EN, "short"]

    async def twice():
        return (await served.score(QUERY, documents, truncation="chunk"),
                await served.score(QUERY, documents, truncation="chunk"))

    try:
        first, second = asyncio.run(twice())
    finally:
        served.scheduler.stop(5)
    expected = library.score_query(QUERY, documents)
    windows = sum(c.chunks for c in expected.chunks)
    assert np.allclose(first.logits, expected.logits, atol=1e-5)
    assert [c.highlight for c in first.chunks] == [c.highlight for c in expected.chunks]
    assert len(cache) == windows and first.cache_hits == 0
    assert second.cache_hits == windows and np.array_equal(second.logits, first.logits)


def test_a_hundred_window_document_does_not_starve_a_small_request(reranker):
    [chunked] = chunk_pairs(reranker.encoder, [(QUERY, LONG_EN * 4)], ChunkPolicy(overlap=8, max_chunks=100), 64)
    assert len(chunked.windows) == 100
    queue = FairQueue(max_batch_tokens=512, max_batch_size=64)
    big = Job(0, [w.pair for w in chunked.windows], 0.0, None)
    queue.add(big)
    queue.next_batch()  # the long document is in the model
    small = Job(1, reranker.encoder.encode(QUERY, ["pandas eat bamboo", "a red panda"]), 0.0, None)
    queue.add(small)
    assert all(e.job is small for e in queue.next_batch()) and small.pending == []
    assert len(big.pending) > 80  # most of the long document is still to come


def test_library_rerank_per_call_truncation_chunk_and_error(reranker):
    results = reranker.rerank(QUERY, [LONG_EN, "pandas"], truncation="chunk")
    by_index = {r.index: r for r in results}
    assert by_index[0].chunks > 1 and by_index[1].chunks == 1 and by_index[1].highlight == (0, len("pandas"))
    assert all(r.chunks is None for r in reranker.rerank(QUERY, [LONG_EN]))  # the reranker's default: truncate
    with pytest.raises(RerankdError, match="max_length") as error:
        reranker.compute_score([(QUERY, LONG_EN)], truncation="error")
    assert error.value.kind is ErrorKind.INPUT_TOO_LARGE


@pytest.mark.parametrize("wanted", [1, 7, 100, 5000])
def test_tails_equal_the_end_of_the_whole_tokenization(short_reranker, wanted):
    encoder = short_reranker[1].encoder
    texts = [LONG_EN, LONG_ZH, MIXED, "short", ""]
    assert encoder.tails(texts, [wanted] * len(texts)) == [ids[-wanted:] if ids else [] for ids in encoder.token_ids(texts)]
