"""Pair encoding equals the model's own tokenizer."""

from __future__ import annotations

import random

import pytest
from helpers import LONG_EN, LONG_ZH, PAIRS
from transformers import AutoTokenizer

from rerankd.corpus import corpus_lines
from rerankd.engine import PairEncoder
from rerankd.errors import RerankdError


def _varied_texts() -> list[str]:
    """Texts whose cuts land in awkward places: multibyte and combining characters, runs of whitespace,
    words longer than WordPiece's 100 characters, unbroken CJK, and random mixes of them near the cut sizes."""
    rng = random.Random(11)
    lines = corpus_lines()
    pieces = [*lines, "  ", "\n\t ", "   \u3000 ", "e\u0301" * 3, "🐼🎋" * 4, "ﬁ ﬂ ㈱ ", "x" * 130, "Ａ１",
              "internationalization" * 7, "熊猫" * 40]
    texts = [
        LONG_EN * 3,
        LONG_ZH * 4,
        "x" * 9000,
        "word " * 3000,
        " " * 5000 + LONG_EN,
        "🐼" * 4000,
        "e\u0301" * 4000,
        ("a" * 99 + " ") * 60,
        ("b" * 101 + " ") * 60,
        "".join(lines) * 2,
    ]
    for _ in range(24):
        text = ""
        while len(text) < rng.choice([200, 2000, 6000, 15000]):
            text += rng.choice(pieces) + rng.choice(["", " ", "", "\n"])
        texts.append(text)
    return texts


VARIED = _varied_texts()


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_heads_are_exactly_the_first_ids_of_the_whole_text(arch, xlmr_dir, bert_dir):
    encoder = PairEncoder(AutoTokenizer.from_pretrained(xlmr_dir if arch == "xlm-roberta" else bert_dir), 512, 384)
    whole = encoder.token_ids(VARIED)
    for wanted in (1, 17, 129, 385, 509, 2000):
        heads = encoder.heads(VARIED, [wanted] * len(VARIED))
        for text, head, ids in zip(VARIED, heads, whole, strict=True):
            assert head == ids[:wanted], (wanted, text[:80])


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
@pytest.mark.parametrize("max_length", [64, 512])
def test_varied_pairs_match_the_tokenizer_and_report_truncation_truly(arch, max_length, xlmr_dir, bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir if arch == "xlm-roberta" else bert_dir)
    encoder = PairEncoder(tokenizer, max_length=max_length, query_max_length=max_length * 3 // 4)
    queries = ["short query", VARIED[11][:3000]]  # the second is cut to its own budget
    pairs = [(q, d) for q in queries for d in VARIED]
    query_ids = dict(zip(queries, encoder.token_ids(queries), strict=True))
    special = encoder.template.num_special_tokens
    for (query, _), pair, doc_ids in zip(pairs, encoder.encode_pairs(pairs), encoder.token_ids(VARIED * 2)):
        q = query_ids[query][: encoder.query_max_length]
        ids, types = encoder.template.build(q, doc_ids[: max_length - special - len(q)], encoder.with_token_types)
        assert pair.input_ids == ids and pair.token_type_ids == types
        full = len(query_ids[query]) + len(doc_ids) + special
        assert pair.truncated == (full > max_length)
        # Exact when nothing was cut; a lower bound past what was kept when something was.
        assert pair.full_length == full if not pair.truncated else pair.num_tokens < pair.full_length <= full


def test_a_long_document_is_tokenized_only_as_far_as_it_is_used(xlmr_dir):
    encoder = PairEncoder(AutoTokenizer.from_pretrained(xlmr_dir), 512, 384)
    seen: list[int] = []
    encode = encoder._encode

    def counting(texts):
        seen.append(sum(map(len, texts)))
        return encode(texts)

    encoder._encode = counting  # type: ignore[method-assign]
    document = LONG_EN * 150  # a million characters, 250k tokens
    [pair] = encoder.encode("query", [document])
    assert pair.num_tokens == 512 and pair.truncated
    assert 0 < sum(seen) < 20_000, seen  # characters tokenized: a few cuts of a few thousand each
    query_ids, doc_ids = encoder.token_ids(["query", document[:20_000]])
    assert pair.input_ids == encoder.template.build(query_ids, doc_ids[: 512 - 4 - len(query_ids)], False)[0]


def test_heads_are_exact_through_the_python_tokenizer_too(xlmr_dir):
    """The path taken when a tokenizer post-processes in Python."""
    encoder = PairEncoder(AutoTokenizer.from_pretrained(xlmr_dir), 512, 384)
    texts = VARIED[:12]
    whole = encoder.token_ids(texts)
    encoder._rust = None
    assert encoder.heads(texts, [385] * len(texts)) == [ids[:385] for ids in whole]


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


def test_a_call_can_tighten_the_cut_and_truncation_is_reported(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    encoder = PairEncoder(tokenizer, max_length=512, query_max_length=384)
    full = encoder.encode("query", [LONG_EN])[0]
    assert full.num_tokens == 512 and full.truncated and full.full_length > 512
    capped = encoder.encode("query", [LONG_EN], max_document_tokens=20)[0]
    query_tokens = len(tokenizer("query", add_special_tokens=False)["input_ids"])
    assert capped.num_tokens == query_tokens + 4 + 20 and capped.truncated
    assert capped.input_ids[:-1] == full.input_ids[: capped.num_tokens - 1]
    short = encoder.encode("query", [LONG_EN], max_length=64)[0]
    assert short.num_tokens == 64 and short.input_ids[:40] == full.input_ids[:40]
    untouched = encoder.encode("query", ["short"], max_document_tokens=20)[0]
    assert not untouched.truncated


def test_a_long_query_is_cut_to_leave_room_when_a_call_asks_for_a_short_pair(xlmr_dir):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_dir)
    encoder = PairEncoder(tokenizer, max_length=512, query_max_length=384)
    pair = encoder.encode(LONG_EN, ["doc"], max_length=16)[0]
    assert pair.num_tokens == 16 and pair.truncated
