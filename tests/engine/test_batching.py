"""Token-budget batch planning and padding."""

from __future__ import annotations

import random

import numpy as np

from rerankd.engine import EncodedPair, collate, plan_batches


def test_every_pair_lands_in_exactly_one_batch_within_budget_and_row_cap():
    rng = random.Random(0)
    lengths = [rng.randint(5, 512) for _ in range(500)]
    batches = plan_batches(lengths, max_batch_tokens=4096, max_batch_size=16)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        widths = [lengths[i] for i in batch]
        assert len(batch) <= 16
        assert len(batch) * max(widths) <= 4096
        assert widths == sorted(widths, reverse=True)


def test_batches_run_longest_first_and_group_similar_lengths():
    lengths = [10, 500, 12, 480, 11, 490]
    batches = plan_batches(lengths, max_batch_tokens=1500, max_batch_size=100)
    assert batches == [[1, 5, 3], [2, 4, 0]]


def test_a_pair_longer_than_the_budget_gets_a_batch_of_its_own():
    assert plan_batches([900, 10, 10], max_batch_tokens=100, max_batch_size=8) == [[0], [1, 2]]


def test_padding_to_a_multiple_counts_in_the_budget():
    # widths pad 9 -> 16: two rows cost 32 tokens, more than 24
    assert plan_batches([9, 9], max_batch_tokens=24, max_batch_size=8, pad_to_multiple_of=8) == [[0], [1]]


def test_collate_pads_right_with_the_pad_id_and_masks_padding():
    pairs = [EncodedPair([0, 5, 2], [0, 0, 1]), EncodedPair([0, 2], [0, 1])]
    batch = collate(pairs, pad_id=1, with_token_types=True, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[0, 5, 2, 1], [0, 2, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    assert batch["input_ids"].dtype == np.int64
    assert "token_type_ids" not in collate(pairs, pad_id=1, with_token_types=False)
