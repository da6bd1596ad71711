"""Turn (query, document) pairs into model input ids, exactly as FlagEmbedding does.

FlagReranker's semantics for bge-reranker-v2-m3: the query is tokenized
without special tokens and cut to `query_max_length`; the pair is then built
with the model's own special tokens and only the document is truncated so the
pair fits `max_length`.

Texts are tokenized by a private copy of the model's Rust tokenizer with
truncation and padding switched off. It holds no per-call state, so threads
can share it without a lock, and every query is tokenized once per call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from rerankd.errors import ErrorKind, RerankdError

log = logging.getLogger(__name__)

# Texts that exercise normalisation, CJK, accents and whitespace; used once at
# start-up to prove the private tokenizer copy equals the model's tokenizer.
_PROBES = ("Hello, World!", "  two  spaces ", "熊猫吃竹子。", "ＡＢＣ１２３ café naïve", "x" * 40, "")


class EncodedPair:
    """Model input ids of one pair, and how long the pair was before it was cut to fit."""

    __slots__ = ("full_length", "input_ids", "token_type_ids")

    def __init__(self, input_ids: list[int], token_type_ids: list[int] | None, full_length: int | None = None) -> None:
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.full_length = len(input_ids) if full_length is None else full_length

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def truncated(self) -> bool:
        """Whether the query or the document lost tokens to fit."""
        return self.full_length > len(self.input_ids)


@dataclass(frozen=True)
class PairTemplate:
    """Where a model puts its special tokens around the two sequences of a pair.

    Read off the tokenizer's own post-processor, so `<s> q </s></s> d </s>`
    (XLM-R) and `[CLS] q [SEP] d [SEP]` with token types (BERT) both come out
    exactly as the model was trained with.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    first_type: int
    middle_types: tuple[int, ...]
    second_type: int
    suffix_types: tuple[int, ...]

    @property
    def num_special_tokens(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PairTemplate:
        if not getattr(tokenizer, "is_fast", False):
            raise RerankdError(
                ErrorKind.UNSUPPORTED,
                f"{type(tokenizer).__name__} is not backed by the Rust tokenizers library; rerankd needs a "
                "tokenizer.json (a 'fast' tokenizer)",
            )
        encoding = tokenizer("a", "b", return_token_type_ids=True)
        ids, types = encoding["input_ids"], encoding["token_type_ids"]
        sequence_ids = encoding.sequence_ids(0)
        first = [i for i, s in enumerate(sequence_ids) if s == 0]
        second = [i for i, s in enumerate(sequence_ids) if s == 1]
        if not first or not second:
            raise RerankdError(ErrorKind.UNSUPPORTED, "the tokenizer does not encode text pairs")
        a0, a1, b0, b1 = first[0], first[-1] + 1, second[0], second[-1] + 1
        return cls(
            prefix=tuple(ids[:a0]),
            middle=tuple(ids[a1:b0]),
            suffix=tuple(ids[b1:]),
            prefix_types=tuple(types[:a0]),
            first_type=types[a0],
            middle_types=tuple(types[a1:b0]),
            second_type=types[b0],
            suffix_types=tuple(types[b1:]),
        )

    def build(self, query: list[int], document: list[int], with_types: bool) -> tuple[list[int], list[int] | None]:
        ids = [*self.prefix, *query, *self.middle, *document, *self.suffix]
        if not with_types:
            return ids, None
        types = [
            *self.prefix_types,
            *([self.first_type] * len(query)),
            *self.middle_types,
            *([self.second_type] * len(document)),
            *self.suffix_types,
        ]
        return ids, types


class PairEncoder:
    """Encodes pairs for one model under one `max_length` / `query_max_length` policy."""

    def __init__(self, tokenizer: Any, max_length: int, query_max_length: int) -> None:
        self.template = PairTemplate.from_tokenizer(tokenizer)
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.with_token_types = "token_type_ids" in tokenizer.model_input_names
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        room = max_length - self.template.num_special_tokens - query_max_length
        if room < 1:
            raise RerankdError(
                ErrorKind.INVALID_INPUT,
                f"query_max_length ({query_max_length}) plus the {self.template.num_special_tokens} special tokens "
                f"leaves no room for the document within max_length ({max_length}); lower query_max_length",
            )
        self._tokenizer = tokenizer
        self._rust = _untruncated_copy(tokenizer)
        if self._ids_rust(list(_PROBES)) != self._ids_reference(list(_PROBES)):
            log.warning("tokenizer %s post-processes in Python; using it directly", type(tokenizer).__name__)
            self._rust = None

    def _ids_rust(self, texts: list[str]) -> list[list[int]]:
        assert self._rust is not None
        return [e.ids for e in self._rust.encode_batch(texts, add_special_tokens=False)]

    def _ids_reference(self, texts: list[str]) -> list[list[int]]:
        return self._tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, with no special tokens and no truncation."""
        texts = list(texts)
        if not texts:
            return []
        return self._ids_rust(texts) if self._rust is not None else self._ids_reference(texts)

    def encode(
        self,
        query: str,
        documents: Sequence[str],
        max_length: int | None = None,
        max_document_tokens: int | None = None,
    ) -> list[EncodedPair]:
        """One query against many documents: the query is tokenized once.

        `max_length` (at most the encoder's) and `max_document_tokens` tighten
        the cut for one call, as an API request may ask.
        """
        full_query = self.token_ids([query])[0]
        return [
            self._pair(full_query, doc_ids, max_length, max_document_tokens) for doc_ids in self.token_ids(documents)
        ]

    def encode_pairs(
        self, pairs: Sequence[tuple[str, str]], max_length: int | None = None, max_document_tokens: int | None = None
    ) -> list[EncodedPair]:
        """Arbitrary pairs, in order; each distinct query is tokenized once."""
        queries = list(dict.fromkeys(q for q, _ in pairs))
        query_ids = dict(zip(queries, self.token_ids(queries), strict=True))
        doc_ids = self.token_ids([d for _, d in pairs])
        return [
            self._pair(query_ids[q], d, max_length, max_document_tokens) for (q, _), d in zip(pairs, doc_ids, strict=True)
        ]

    def _pair(
        self, full_query: list[int], doc_ids: list[int], max_length: int | None, max_document_tokens: int | None
    ) -> EncodedPair:
        special = self.template.num_special_tokens
        limit = min(max_length, self.max_length) if max_length else self.max_length
        # The query keeps its own budget, but leaves at least one token of room for the document.
        query_ids = full_query[: max(1, min(self.query_max_length, limit - special - 1))]
        keep = limit - special - len(query_ids)
        if max_document_tokens is not None:
            keep = min(keep, max_document_tokens)
        ids, types = self.template.build(query_ids, doc_ids[:keep], self.with_token_types)
        return EncodedPair(ids, types, len(full_query) + len(doc_ids) + special)


def _untruncated_copy(tokenizer: Any) -> Tokenizer:
    rust = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    rust.no_truncation()
    rust.no_padding()
    return rust
