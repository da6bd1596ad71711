"""Model inputs of the LLM reranker kinds, exactly as their reference code builds them.

Both encoders have `PairEncoder`'s interface (`encode`, `encode_pairs`, `token_ids`, `max_length`,
`query_max_length`, `pad_id`, `template.num_special_tokens`), plus an `instruction` per call.

Lengths: `max_length` is the reference's own `max_length`. For Qwen3-Reranker that is the whole input
(8192 by default: template, instruction, query and document); for FlagLLMReranker it caps `B: `+passage,
and the pair is cut on the passage side to `max_length` + the separator and prompt, to which the separator
and prompt are then appended (FlagEmbedding 1.4.2). The query is kept whole (Qwen3: cut only once the whole
document is gone; Flag: cut to `query_max_length`).

Texts are tokenized whole, by a copy of the model's Rust tokenizer with truncation and padding off, so the
ids equal those of the reference's own `tokenizer(...)` calls; the request's character limit bounds the cost.
A per-request `max_document_tokens` cuts the document text at the end of its N-th token (its own
tokenization) before the kind's rule applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from rerankd.engine.encoding import EncodedPair
from rerankd.errors import ErrorKind, RerankdError

# Qwen3-Reranker model card: the chat template around the formatted pair.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_PAIR_FORMAT = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
# FlagEmbedding BaseLLMReranker's defaults: query_instruction_for_rerank, passage_instruction_for_rerank, sep.
FLAG_QUERY_INSTRUCTION = "A: "
FLAG_PASSAGE_INSTRUCTION = "B: "
FLAG_SEPARATOR = "\n"


@dataclass(frozen=True)
class FixedTokens:
    """The tokens an input has besides the query and the document (with the default instruction)."""

    num_special_tokens: int


class _LLMEncoder:
    accepts_instruction = True
    with_token_types = False

    def __init__(self, tokenizer: Any, max_length: int, query_max_length: int, default_instruction: str) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise RerankdError(ErrorKind.UNSUPPORTED, f"{type(tokenizer).__name__} has no tokenizer.json; rerankd "
                                                      "needs a 'fast' tokenizer")
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.default_instruction = default_instruction
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._tokenizer = tokenizer
        self._rust = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._rust.no_truncation()
        self._rust.no_padding()

    def token_ids(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        if not texts:
            return []
        return [e.ids for e in self._rust.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def _cut_documents(self, documents: list[str], max_document_tokens: int | None) -> list[str]:
        if max_document_tokens is None:
            return documents
        encodings = self._rust.encode_batch(documents, add_special_tokens=False)
        return [d if len(e.ids) <= max_document_tokens else d[: e.offsets[max_document_tokens - 1][1]]
                for d, e in zip(documents, encodings, strict=True)]

    def encode(self, query: str, documents: Sequence[str], max_length: int | None = None,
               max_document_tokens: int | None = None, instruction: str | None = None) -> list[EncodedPair]:
        return self.encode_pairs([(query, d) for d in documents], max_length, max_document_tokens, instruction)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], max_length: int | None = None,
                     max_document_tokens: int | None = None, instruction: str | None = None) -> list[EncodedPair]:
        if not pairs:
            return []
        limit = min(max_length, self.max_length) if max_length else self.max_length
        documents = self._cut_documents([d for _, d in pairs], max_document_tokens)
        return self._encode([q for q, _ in pairs], documents, limit, instruction or self.default_instruction)

    def _encode(self, queries: list[str], documents: list[str], limit: int, instruction: str) -> list[EncodedPair]:
        raise NotImplementedError


class Qwen3PairEncoder(_LLMEncoder):
    """The Qwen3-Reranker model card's `process_inputs`: prefix + tokenizer(formatted pair, truncated to
    max_length - prefix - suffix) + suffix; padded on the left."""

    padding_side = "left"

    def __init__(self, tokenizer: Any, max_length: int, query_max_length: int, default_instruction: str) -> None:
        super().__init__(tokenizer, max_length, query_max_length, default_instruction)
        self.prefix_ids, self.suffix_ids = self.token_ids([QWEN3_PREFIX, QWEN3_SUFFIX])
        self.yes_id = tokenizer.convert_tokens_to_ids("yes")
        self.no_id = tokenizer.convert_tokens_to_ids("no")
        fixed = len(self.prefix_ids) + len(self.suffix_ids)
        if max_length <= fixed:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"max_length {max_length} leaves no room after the "
                                                        f"{fixed} tokens of Qwen3-Reranker's template")
        body = len(self.token_ids([QWEN3_PAIR_FORMAT.format(instruction=default_instruction, query="", doc="")])[0])
        self.template = FixedTokens(fixed + body)

    @property
    def score_tokens(self) -> list[tuple[int, float]]:
        """logit(yes) - logit(no): its sigmoid is the card's softmax over (no, yes)."""
        return [(self.yes_id, 1.0), (self.no_id, -1.0)]

    def _encode(self, queries: list[str], documents: list[str], limit: int, instruction: str) -> list[EncodedPair]:
        room = limit - len(self.prefix_ids) - len(self.suffix_ids)
        if room < 1:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"a limit of {limit} tokens leaves no room after the "
                                                        f"{limit - room} tokens of Qwen3-Reranker's template")
        # One string, tokenized with the tokenizer's own special-token rule, as the card's tokenizer(pairs) call.
        bodies = self.token_ids(
            [QWEN3_PAIR_FORMAT.format(instruction=instruction, query=q, doc=d) for q, d in zip(queries, documents)],
            add_special_tokens=True,
        )
        fixed = len(self.prefix_ids) + len(self.suffix_ids)
        return [EncodedPair([*self.prefix_ids, *body[:room], *self.suffix_ids], None, fixed + len(body))
                for body in bodies]


class FlagLLMPairEncoder(_LLMEncoder):
    """FlagEmbedding 1.4.2 `BaseLLMReranker.compute_score_single_gpu`: [BOS] + (A: query)[:query_max_length],
    then sep + (B: passage)[:max_length], cut on the passage side to max_length + len(sep) + len(prompt),
    then sep + prompt. Each segment is tokenized on its own without special tokens."""

    def __init__(self, tokenizer: Any, max_length: int, query_max_length: int, default_instruction: str) -> None:
        super().__init__(tokenizer, max_length, query_max_length, default_instruction)
        self.padding_side = tokenizer.padding_side
        bos = tokenizer.bos_token_id
        self.bos_ids = [bos] if bos is not None and bos != tokenizer.pad_token_id else []
        self.sep_ids = self.token_ids([FLAG_SEPARATOR])[0]
        self.yes_id = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
        prompt, query, passage = self.token_ids([default_instruction, FLAG_QUERY_INSTRUCTION, FLAG_PASSAGE_INSTRUCTION])
        self.template = FixedTokens(len(self.bos_ids) + 2 * len(self.sep_ids) + len(prompt) + len(query) + len(passage))

    @property
    def score_tokens(self) -> list[tuple[int, float]]:
        return [(self.yes_id, 1.0)]

    def _encode(self, queries: list[str], documents: list[str], limit: int, instruction: str) -> list[EncodedPair]:
        # The query keeps FlagEmbedding's 3/4 share of a per-request limit below the configured one.
        query_room = self.query_max_length if limit >= self.max_length else min(self.query_max_length, limit * 3 // 4)
        prompt = self.token_ids([instruction])[0]
        unique = list(dict.fromkeys(queries))
        query_ids = dict(zip(unique, self.token_ids([FLAG_QUERY_INSTRUCTION + q for q in unique]), strict=True))
        passages = self.token_ids([FLAG_PASSAGE_INSTRUCTION + d for d in documents])
        pair_room = limit + len(self.sep_ids) + len(prompt)
        pairs = []
        for query, passage in zip(queries, passages, strict=True):
            first = [*self.bos_ids, *query_ids[query][:query_room]]
            second = [*self.sep_ids, *passage[:limit]]
            second = second[: max(0, pair_room - len(first))]  # truncation='only_second'
            ids = [*first, *second, *self.sep_ids, *prompt]
            full = len(self.bos_ids) + len(query_ids[query]) + 2 * len(self.sep_ids) + len(passage) + len(prompt)
            pairs.append(EncodedPair(ids, None, full))
        return pairs
