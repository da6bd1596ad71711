"""Pair encoding equals the model's own tokenizer."""

from __future__ import annotations

import pytest
from helpers import LONG_EN, PAIRS
from transformers import AutoTokenizer

from rerankd.engine import PairEncoder
from rerankd.errors import RerankdError


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_pairs_match_the_tokenizers_own_pair_encoding(arch, xlmr_dir, bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir if arch == "xlm-roberta" else bert_dir)
    encoder = PairEncoder(tokenizer, max_length=512, query_max_length=384)
    for (query, doc), pair in zip(PAIRS, encoder.encode_pairs(PAIRS)):
        # Lists, because transformers 5 drops an empty text_pair given as a bare string.
        expected = {k: v[0] for k, v in tokenizer([query], [doc], truncation="only_second", max_length=512).items()}
        assert pair.input_ids == expected["input_ids"]
        if arch == "bert":
            assert pair.token_type_ids == expected["token_type_ids"]
        else:
            assert pair.token_type_ids is None
        assert pair.truncated == (len(tokenizer([query], [doc])["input_ids"][0]) > 512)


def test_xlmr_pair_format_is_s_q_eos_eos_d_eos(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    pair = PairEncoder(tokenizer, 512, 384).encode("q", ["d"])[0]
    q = tokenizer("q", add_special_tokens=False)["input_ids"]
    d = tokenizer("d", add_special_tokens=False)["input_ids"]
    assert pair.input_ids == [0, *q, 2, 2, *d, 2]


def test_only_the_document_is_cut_and_the_query_keeps_its_budget(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    encoder = PairEncoder(tokenizer, max_length=40, query_max_length=10)
    long_query = LONG_EN[:200]
    pair = encoder.encode(long_query, [LONG_EN])[0]
    query_ids = tokenizer(long_query, add_special_tokens=False)["input_ids"][:10]
    assert pair.num_tokens == 40 and pair.truncated
    assert pair.input_ids[1:11] == query_ids
    short = encoder.encode("hi", ["short doc"])[0]
    assert not short.truncated


def test_encode_and_encode_pairs_agree(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    encoder = PairEncoder(tokenizer, 512, 384)
    docs = [d for _, d in PAIRS]
    by_query = encoder.encode("shared query", docs)
    by_pairs = encoder.encode_pairs([("shared query", d) for d in docs])
    assert [p.input_ids for p in by_query] == [p.input_ids for p in by_pairs]


def test_query_budget_that_leaves_no_room_is_refused(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    with pytest.raises(RerankdError, match="no room for the document"):
        PairEncoder(tokenizer, max_length=16, query_max_length=12)


def test_a_call_can_tighten_the_cut_and_truncation_reports_the_full_length(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    encoder = PairEncoder(tokenizer, max_length=512, query_max_length=384)
    full = encoder.encode("query", [LONG_EN])[0]
    assert full.num_tokens == 512 and full.truncated and full.full_length > 512
    capped = encoder.encode("query", [LONG_EN], max_document_tokens=20)[0]
    query_tokens = len(tokenizer("query", add_special_tokens=False)["input_ids"])
    assert capped.num_tokens == query_tokens + 4 + 20 and capped.full_length == full.full_length
    short = encoder.encode("query", [LONG_EN], max_length=64)[0]
    assert short.num_tokens == 64 and short.input_ids[:40] == full.input_ids[:40]
    untouched = encoder.encode("query", ["short"], max_document_tokens=20)[0]
    assert not untouched.truncated


def test_a_long_query_is_cut_to_leave_room_when_a_call_asks_for_a_short_pair(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    encoder = PairEncoder(tokenizer, max_length=512, query_max_length=384)
    pair = encoder.encode(LONG_EN, ["doc"], max_length=16)[0]
    assert pair.num_tokens == 16 and pair.truncated
