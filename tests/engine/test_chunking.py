"""Long documents in windows: the window rule, exactness against FlagEmbedding, bounded tokenization."""

from __future__ import annotations

import math

import pytest
from helpers import LONG_EN, LONG_ZH
from test_parity import flag_reranker_reference

from rerankd import Reranker
from rerankd.engine.chunking import ChunkPolicy, chunk_pairs

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
