"""Cut encoded pairs into model batches by a token budget.

Pairs are sorted longest first, so each batch holds pairs of similar length
and padding waste stays small; the longest batch runs first, so a batch that
doesn't fit in memory shows up at once. A batch's cost is counted the way the
model pays it: rows x longest row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rerankd.engine.encoding import EncodedPair


def padded_length(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def plan_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int, pad_to_multiple_of: int = 1
) -> list[list[int]]:
    """Indices of the pairs in each batch. A single pair over the budget still gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for index in order:
        # Sorted longest first, so the batch's first pair sets its padded width.
        if not current:
            width = padded_length(lengths[index], pad_to_multiple_of)
        elif len(current) >= max_batch_size or (len(current) + 1) * width > max_batch_tokens:
            batches.append(current)
            current = []
            width = padded_length(lengths[index], pad_to_multiple_of)
        current.append(index)
    if current:
        batches.append(current)
    return batches


def length_groups(lengths: Sequence[int], pass_tokens: int, pad_to_multiple_of: int = 1) -> list[list[int]]:
    """Split one batch into forward passes of similar length, for a device where a pass costs its padded tokens.

    Minimizes the padded tokens (rows x widest row, per pass) plus `pass_tokens` for each pass: the fixed cost
    of one more pass, in tokens. Passes are runs of the batch sorted longest first. A batch padded by less than
    one pass's cost stays whole without the search.
    """
    widths = [padded_length(n, pad_to_multiple_of) for n in lengths]
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    if len(order) * widths[order[0]] - sum(widths) <= pass_tokens:
        return [order]
    # best[j]: least cost of the first j rows in order; start[j]: where the last pass of that plan begins.
    best = [0] + [math.inf] * len(order)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for begin in range(end):
            cost = best[begin] + (end - begin) * widths[order[begin]] + pass_tokens
            if cost < best[end]:
                best[end], start[end] = cost, begin
    groups: list[list[int]] = []
    end = len(order)
    while end:
        groups.append(order[start[end] : end])
        end = start[end]
    return groups[::-1]


def collate(
    pairs: Sequence[EncodedPair], pad_id: int, with_token_types: bool, pad_to_multiple_of: int = 1
) -> dict[str, np.ndarray]:
    """Right-padded int64 arrays for one batch."""
    width = padded_length(max(p.num_tokens for p in pairs), pad_to_multiple_of)
    input_ids = np.full((len(pairs), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(pairs), width), dtype=np.int64)
    token_type_ids = np.zeros((len(pairs), width), dtype=np.int64) if with_token_types else None
    for row, pair in enumerate(pairs):
        n = pair.num_tokens
        input_ids[row, :n] = pair.input_ids
        attention_mask[row, :n] = 1
        if token_type_ids is not None and pair.token_type_ids is not None:
            token_type_ids[row, :n] = pair.token_type_ids
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return batch
