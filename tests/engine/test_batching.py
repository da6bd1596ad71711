"""Token-budget batch planning and padding."""

from __future__ import annotations

import random

import numpy as np

from rerankd.engine import BatchScorer, EncodedPair, collate, plan_batches
from rerankd.engine.batching import length_groups


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


def test_a_batch_of_very_different_lengths_splits_into_passes_of_similar_length():
    # One pass would pay 4 x 500 = 2000 padded tokens; [500, 480] + [12, 10] pay 1000 + 24 + one pass's cost.
    assert length_groups([10, 500, 12, 480], pass_tokens=64) == [[1, 3], [2, 0]]
    # A second pass is not worth it when it would save less than it costs.
    assert length_groups([10, 500, 12, 480], pass_tokens=1000) == [[1, 3, 2, 0]]


def test_length_groups_minimize_padded_tokens_plus_a_cost_per_pass():
    rng = random.Random(1)
    for _ in range(50):
        lengths = [rng.randint(1, 512) for _ in range(rng.randint(1, 9))]
        groups = length_groups(lengths, pass_tokens=50)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))

        def cost(plan: list[list[int]]) -> int:
            return sum(len(g) * max(lengths[i] for i in g) + 50 for g in plan)

        # No split into runs of the sorted batch does better (checked by brute force over every cut).
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = min(
            cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)), strict=True)])
            for mask in range(2 ** (len(order) - 1))
            for cuts in [tuple(k + 1 for k in range(len(order) - 1) if mask >> k & 1)]
        )
        assert cost(groups) == best


def test_a_split_batch_scores_each_pair_as_a_whole_batch_would() -> None:
    class Backend:
        device = "cpu"

        def __init__(self) -> None:
            self.widths: list[int] = []

        def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
            self.widths.append(inputs["input_ids"].shape[1])
            return inputs["attention_mask"].sum(axis=1).astype(np.float32)  # the row's own length

    pairs = [EncodedPair([1] * n, None) for n in (10, 500, 12, 480)]
    backend = Backend()
    scorer = BatchScorer(backend, pad_id=0, with_token_types=False, max_batch_tokens=4096, max_batch_size=8,
                         pass_tokens=64)
    assert scorer.run_batch(pairs).tolist() == [10, 500, 12, 480]
    assert backend.widths == [500, 12]
    whole = BatchScorer(backend, pad_id=0, with_token_types=False, max_batch_tokens=4096, max_batch_size=8)
    assert whole.run_batch(pairs).tolist() == [10, 500, 12, 480]
    assert backend.widths[2:] == [500]


def test_collate_pads_right_with_the_pad_id_and_masks_padding():
    pairs = [EncodedPair([0, 5, 2], [0, 0, 1]), EncodedPair([0, 2], [0, 1])]
    batch = collate(pairs, pad_id=1, with_token_types=True, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[0, 5, 2, 1], [0, 2, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    assert batch["input_ids"].dtype == np.int64
    assert "token_type_ids" not in collate(pairs, pad_id=1, with_token_types=False)
