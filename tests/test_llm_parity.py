"""LLM rerankers score exactly like their reference code.

The references are transcribed here with plain transformers, sharing nothing with the engine under test:
- Qwen3-Reranker: the model card's `format_instruction`, `process_inputs` and `compute_logits`;
- bge-reranker-v2-gemma: FlagEmbedding 1.4.2 `FlagLLMReranker.compute_score` (BaseLLMReranker in
  inference/reranker/decoder_only/base.py, with AbsReranker's `A: `/`B: ` instructions).
Each reference runs one pair per forward pass, unpadded: padded on the left without position ids, as both
references batch, a pair's rotary positions shift with its batch. scripts/check_flag_llm_reranker.py checks this
transcription once against the real FlagEmbedding package.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import LONG_EN, PAIRS
from transformers import AutoModelForCausalLM, AutoTokenizer

from rerankd import Reranker
from rerankd.testing import make_causal_test_model

INSTRUCTION = "Given a question about animals, find passages that answer it"


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_causal_test_model(tmp_path_factory.mktemp("qwen3-tiny"), shape="tiny", arch="qwen3")


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_causal_test_model(tmp_path_factory.mktemp("gemma-tiny"), shape="tiny", arch="gemma")


# --- the Qwen3-Reranker model card, transcribed ------------------------------------------------------------


def qwen3_model_card_reference(model_dir: Path, pairs, instruction=None, max_length=8192) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
              "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)

    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = "Given a web search query, retrieve relevant passages that answer the query"
        return "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(  # noqa: UP032 - verbatim
            instruction=instruction, query=query, doc=doc)

    def process_inputs(pairs):
        inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=max_length - len(prefix_tokens) - len(suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        return tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)

    @torch.no_grad()
    def compute_logits(inputs):
        batch_scores = model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    return [compute_logits(process_inputs([format_instruction(instruction, q, d)]))[0] for q, d in pairs]


# --- FlagEmbedding 1.4.2 FlagLLMReranker, transcribed ------------------------------------------------------


def flag_llm_reranker_reference(model_dir: Path, pairs, max_length=512, query_max_length=None, prompt=None,
                                normalize=False) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    yes_loc = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    if query_max_length is None:
        query_max_length = max_length * 3 // 4
    # AbsReranker.get_detailed_inputs with query_instruction_for_rerank="A: ", passage_instruction_for_rerank="B: "
    pairs = [("{}{}".format("A: ", q), "{}{}".format("B: ", p)) for q, p in pairs]
    if prompt is None:
        prompt = ("Given a query A and a passage B, determine whether the passage contains an answer to the query "
                  "by providing a prediction of either 'Yes' or 'No'.")
    prompt_inputs = tokenizer(prompt, return_tensors=None, add_special_tokens=False)["input_ids"]
    sep_inputs = tokenizer("\n", return_tensors=None, add_special_tokens=False)["input_ids"]
    encode_max_length = max_length + len(sep_inputs) + len(prompt_inputs)
    scores = []
    for query, passage in pairs:
        query_inputs = tokenizer([query], return_tensors=None, add_special_tokens=False,
                                 max_length=query_max_length, truncation=True)["input_ids"][0]
        passage_inputs = tokenizer([passage], return_tensors=None, add_special_tokens=False,
                                   max_length=max_length, truncation=True)["input_ids"][0]
        if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.pad_token_id:
            first = [tokenizer.bos_token_id] + query_inputs
        else:
            first = query_inputs
        item = prepare_for_model_only_second(tokenizer, first, sep_inputs + passage_inputs, encode_max_length)
        input_ids = item + sep_inputs + prompt_inputs
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([input_ids]), attention_mask=torch.ones(1, len(input_ids),
                                                                                         dtype=torch.long)).logits
        score = float(logits[0, -1, yes_loc])  # last_logit_pool of an unpadded row
        scores.append(float(1 / (1 + np.exp(-score))) if normalize else score)
    return scores


def prepare_for_model_only_second(tokenizer, ids: list[int], pair_ids: list[int], max_length: int) -> list[int]:
    """`tokenizer.prepare_for_model(ids, pair_ids, truncation='only_second', max_length=..., padding=False,
    add_special_tokens=False, ...)["input_ids"]`: transformers 5 dropped the method, so on 5 its 4.x rule
    (`truncate_sequences`, right side) is transcribed."""
    if hasattr(type(tokenizer), "prepare_for_model"):
        return tokenizer.prepare_for_model(ids, pair_ids, truncation="only_second", max_length=max_length,
                                           padding=False, return_attention_mask=False, return_token_type_ids=False,
                                           add_special_tokens=False)["input_ids"]
    remove = len(ids) + len(pair_ids) - max_length
    if remove > 0 and len(pair_ids) > remove:
        pair_ids = pair_ids[:-remove]
    return ids + pair_ids


def _max_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


LLM_PAIRS = [*PAIRS, ("What do giant pandas eat?", "Bamboo. " * 40)]


def test_qwen3_scores_equal_the_model_card_code(qwen3_dir):
    reranker = Reranker(str(qwen3_dir), device="cpu")
    assert reranker.loaded.kind == "qwen3-reranker" and reranker.encoder.max_length == 8192
    ours = reranker.compute_score(LLM_PAIRS)
    reference = qwen3_model_card_reference(qwen3_dir, LLM_PAIRS)
    assert _max_diff(ours, reference) < 1e-5
    # The logit is logit(yes) - logit(no): compare on that scale too, where the fixture's scores spread.
    logits = reranker.compute_score(LLM_PAIRS, normalize=False)
    assert _max_diff(logits, [math.log(p / (1 - p)) for p in reference]) < 1e-4
    assert max(logits) - min(logits) > 0.5, "fixture logits should spread, or parity proves little"


def test_qwen3_instruction_and_truncation_follow_the_model_card(qwen3_dir):
    reranker = Reranker(str(qwen3_dir), device="cpu", max_length=96)
    pairs = [(LONG_EN[:200], LONG_EN), *LLM_PAIRS]
    ours = reranker.compute_score(pairs, instruction=INSTRUCTION)
    reference = qwen3_model_card_reference(qwen3_dir, pairs, instruction=INSTRUCTION, max_length=96)
    assert _max_diff(ours, reference) < 1e-5
    assert ours != reranker.compute_score(pairs), "the instruction must reach the model"
    assert any(reranker.score(pairs).truncated)


@pytest.mark.parametrize("normalize", [False, True])
def test_gemma_scores_equal_flag_llm_reranker(gemma_dir, normalize):
    reranker = Reranker(str(gemma_dir), device="cpu")
    assert reranker.loaded.kind == "flag-llm-reranker" and reranker.encoder.max_length == 512
    ours = reranker.compute_score(LLM_PAIRS, normalize=normalize)
    reference = flag_llm_reranker_reference(gemma_dir, LLM_PAIRS, normalize=normalize)
    assert _max_diff(ours, reference) < 1e-5
    assert max(reference) - min(reference) > (0.1 if normalize else 0.5), "fixture scores should spread"


def test_gemma_prompt_and_truncation_follow_flag_llm_reranker(gemma_dir):
    reranker = Reranker(str(gemma_dir), device="cpu", max_length=48, query_max_length=12)
    pairs = [(LONG_EN[:300], LONG_EN), *LLM_PAIRS]
    ours = reranker.compute_score(pairs, normalize=False, instruction="Is B relevant to A? Yes or No.")
    reference = flag_llm_reranker_reference(gemma_dir, pairs, max_length=48, query_max_length=12,
                                            prompt="Is B relevant to A? Yes or No.")
    assert _max_diff(ours, reference) < 1e-5
    assert reranker.score(pairs).truncated[0]


@pytest.mark.parametrize("arch", ["qwen3", "gemma"])
def test_scores_do_not_depend_on_batching_or_prefix_reuse(arch, qwen3_dir, gemma_dir):
    model_dir = str(qwen3_dir if arch == "qwen3" else gemma_dir)
    query = "What do giant pandas eat?"
    documents = [d for _, d in LLM_PAIRS]
    reused = Reranker(model_dir, device="cpu", max_length=256)
    whole = Reranker(model_dir, device="cpu", max_length=256, prefix_reuse=False)
    alone = Reranker(model_dir, device="cpu", max_length=256, max_batch_size=1)
    with_reuse = reused.score_query(query, documents)
    assert with_reuse.batches < len(documents), "the documents should share batches"
    for other in (whole, alone):
        assert _max_diff(with_reuse.logits, other.score_query(query, documents).logits) < 1e-5
