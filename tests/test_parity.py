"""rerankd scores exactly like the references users compare it with.

Both references are written here with plain transformers and tokenizers, pair
by pair and without padding, so they share nothing with the engine under test:
- FlagEmbedding's `FlagReranker.compute_score(pairs, normalize=True)`: the query
  tokenized without special tokens and cut to query_max_length, the pair then
  built with only-second truncation to max_length, sigmoid of the logit;
- plain transformers `tokenizer(q, d)` where nothing needs truncating.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import LONG_EN, PAIRS
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerankd import Reranker


def _logit(model: torch.nn.Module, ids: list[int], types: list[int] | None) -> float:
    inputs = {"input_ids": torch.tensor([ids])}
    if types is not None:
        inputs["token_type_ids"] = torch.tensor([types])
    with torch.no_grad():
        return float(model(**inputs).logits[0, 0])


def flag_reranker_reference(model_dir: Path, pairs, max_length: int, query_max_length: int) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    # A copy: the tokenizer call below leaves its truncation setting on the shared backend.
    rust = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    rust.no_truncation()
    with_types = "token_type_ids" in tokenizer.model_input_names
    special = tokenizer.num_special_tokens_to_add(pair=True)
    scores = []
    for query, doc in pairs:
        query_ids = tokenizer(query, add_special_tokens=False, truncation=True, max_length=query_max_length)[
            "input_ids"
        ]
        q = rust.encode(query, add_special_tokens=False)
        q.truncate(query_max_length)
        assert q.ids == query_ids
        d = rust.encode(doc, add_special_tokens=False)
        d.truncate(max_length - special - len(q.ids))  # only_second
        pair = rust.post_process(q, d, add_special_tokens=True)
        assert len(pair.ids) <= max_length
        logit = _logit(model, pair.ids, pair.type_ids if with_types else None)
        scores.append(1 / (1 + math.exp(-logit)))
    return scores


def plain_transformers_reference(model_dir: Path, pairs) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    scores = []
    for query, doc in pairs:
        # Lists, because transformers 5 drops an empty text_pair given as a bare string.
        encoded = tokenizer([query], [doc], return_tensors="pt")
        with torch.no_grad():
            scores.append(float(torch.sigmoid(model(**encoded).logits[0, 0])))
    return scores


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_scores_equal_flag_reranker_semantics_at_default_lengths(arch, reranker, bert_reranker, xlmr_dir, bert_dir):
    ours = (reranker if arch == "xlm-roberta" else bert_reranker).compute_score(PAIRS)
    reference = flag_reranker_reference(xlmr_dir if arch == "xlm-roberta" else bert_dir, PAIRS, 512, 384)
    assert max(abs(a - b) for a, b in zip(ours, reference)) < 1e-5
    assert max(reference) - min(reference) > 0.2, "fixture scores should spread, or parity proves little"


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_scores_equal_flag_reranker_semantics_when_query_and_document_are_cut(arch, xlmr_dir, bert_dir):
    model_dir = xlmr_dir if arch == "xlm-roberta" else bert_dir
    pairs = [(LONG_EN[:300], LONG_EN), *PAIRS]
    ours = Reranker(str(model_dir), device="cpu", max_length=48, query_max_length=12).compute_score(pairs)
    reference = flag_reranker_reference(model_dir, pairs, 48, 12)
    assert max(abs(a - b) for a, b in zip(ours, reference)) < 1e-5


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_scores_equal_plain_transformers_where_nothing_is_truncated(arch, reranker, bert_reranker, xlmr_dir, bert_dir):
    short = [p for p in PAIRS if len(p[1]) < 200]
    ours = (reranker if arch == "xlm-roberta" else bert_reranker).compute_score(short)
    reference = plain_transformers_reference(xlmr_dir if arch == "xlm-roberta" else bert_dir, short)
    assert max(abs(a - b) for a, b in zip(ours, reference)) < 1e-5


def test_batch_composition_does_not_change_scores(xlmr_dir, reranker):
    one_by_one = Reranker(str(xlmr_dir), device="cpu", max_batch_size=1).compute_score(PAIRS)
    assert max(abs(a - b) for a, b in zip(reranker.compute_score(PAIRS), one_by_one)) < 1e-6
