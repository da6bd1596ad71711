"""Turn (query, document) pairs into model input ids, exactly as FlagEmbedding does.

FlagReranker's semantics for bge-reranker-v2-m3: the query is tokenized
without special tokens and cut to `query_max_length`; the pair is then built
with the model's own special tokens and only the document is truncated so the
pair fits `max_length`.

Texts are tokenized by a private copy of the model's Rust tokenizer with
truncation and padding switched off. It holds no per-call state, so threads
can share it without a lock, and every query is tokenized once per call.

A text is tokenized only as far as its tokens can be used (see `PairEncoder.heads`),
so a request's memory follows `max_length`, not the length of its documents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from rerankd.errors import ErrorKind, RerankdError

log = logging.getLogger(__name__)

# Texts that exercise normalisation, CJK, accents and whitespace; used once at
# start-up to prove the private tokenizer copy equals the model's tokenizer.
_PROBES = ("Hello, World!", "  two  spaces ", "熊猫吃竹子。", "ＡＢＣ１２３ café naïve", "x" * 40, "")
# A text's first cut, in characters per token wanted: enough for English (about 4.5 per token) and Chinese
# (about 1.5) to come out in one cut plus the one that checks it.
_FIRST_CUT_CHARS_PER_TOKEN = 6
# Characters tokenized in one call while texts are cut: what a request's tokenization holds at once.
_GROUP_CHARS = 1 << 18


@dataclass(frozen=True)
class TextTokens:
    """One text's tokens, no special tokens: ids, the word (pre-tokenizer split) each came from, and
    the (start, end) characters of the text each covers."""

    ids: list[int]
    words: list[int | None]
    offsets: list[tuple[int, int]]

    def head(self, n: int) -> TextTokens:
        return TextTokens(self.ids[:n], self.words[:n], self.offsets[:n])

    def begins_word(self, i: int) -> bool:
        """Whether token `i` is the first of its word: where a window may start or end."""
        return i == 0 or self.words[i] != self.words[i - 1]


class EncodedPair:
    """Model input ids of one pair, and how long the pair was before it was cut to fit.

    A pair that was cut was tokenized only part of the way, so its `full_length` is then a
    lower bound (the tokens seen), always more than `num_tokens`; uncut, it is exact.
    """

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
        if [t.ids for t in self._encode_rust(list(_PROBES))] != [t.ids for t in self._encode_reference(list(_PROBES))]:
            log.warning("tokenizer %s post-processes in Python; using it directly", type(tokenizer).__name__)
            self._rust = None

    def _encode_rust(self, texts: list[str]) -> list[TextTokens]:
        assert self._rust is not None
        return [TextTokens(e.ids, e.word_ids, e.offsets)
                for e in self._rust.encode_batch(texts, add_special_tokens=False)]

    def _encode_reference(self, texts: list[str]) -> list[TextTokens]:
        encoded = self._tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                                  return_offsets_mapping=True)
        return [TextTokens(ids, encoded.word_ids(k), [tuple(o) for o in encoded["offset_mapping"][k]])
                for k, ids in enumerate(encoded["input_ids"])]

    def _encode(self, texts: list[str]) -> list[TextTokens]:
        """Ids of each text, the word (pre-tokenizer split) each id came from, and its characters."""
        if not texts:
            return []
        return self._encode_rust(texts) if self._rust is not None else self._encode_reference(texts)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, with no special tokens and no truncation."""
        return [t.ids for t in self._encode(list(texts))]

    def heads(self, texts: Sequence[str], wanted: Sequence[int]) -> list[list[int]]:
        """The first `wanted[i]` ids of each text, the same as tokenizing it whole gives (all of them when
        it has fewer), from as little of it as that takes (see `head_tokens`)."""
        return [t.ids for t in self.head_tokens(texts, wanted)]

    def head_tokens(self, texts: Sequence[str], wanted: Sequence[int]) -> list[TextTokens]:
        """The first `wanted[i]` tokens of each text (ids, words, offsets), the same as tokenizing it whole
        gives (all of them when it has fewer), from as little of it as that takes.

        Each text is cut, tokenized, and its cut doubled until the wanted ids lie before the word the cut
        splits (the tokenizer's model sees one word at a time, so only that word can change) and come out
        the same at two cuts, or until the cut holds the whole text. No fixed margin is safe for every
        tokenizer, so both are checked. A text costs about what is wanted of it, except inside one very
        long word; at most `_GROUP_CHARS` characters are tokenized at once.
        """
        heads: list[TextTokens] = [TextTokens([], [], []) for _ in texts]
        cuts = [max(1, n) * _FIRST_CUT_CHARS_PER_TOKEN for n in wanted]
        earlier: dict[int, list[int]] = {}  # text -> its wanted ids at the previous cut
        pending = list(range(len(texts)))
        while pending:
            unsettled = []
            for group in _groups(pending, [min(cuts[i], len(texts[i])) for i in pending]):
                for i, tokens in zip(group, self._encode([texts[i][: cuts[i]] for i in group]), strict=True):
                    head, words = tokens.head(wanted[i]), tokens.words
                    if cuts[i] >= len(texts[i]):
                        heads[i] = head
                        continue
                    if words and words.index(words[-1]) >= wanted[i]:  # all before the word the cut splits
                        if earlier.get(i) == head.ids:
                            heads[i] = head
                            continue
                        earlier[i] = head.ids
                    cuts[i] *= 2
                    unsettled.append(i)
            pending = unsettled
        return heads

    def tails(self, texts: Sequence[str], wanted: Sequence[int]) -> list[list[int]]:
        """The last `wanted[i]` ids of each text, the same as tokenizing it whole gives: `heads` mirrored.

        The cut is taken from the end, and the wanted ids must lie after the word it splits."""
        tails: list[list[int]] = [[] for _ in texts]
        cuts = [max(1, n) * _FIRST_CUT_CHARS_PER_TOKEN for n in wanted]
        earlier: dict[int, list[int]] = {}
        pending = list(range(len(texts)))
        while pending:
            unsettled = []
            for group in _groups(pending, [min(cuts[i], len(texts[i])) for i in pending]):
                for i, tokens in zip(group, self._encode([texts[i][-cuts[i]:] for i in group]), strict=True):
                    tail, words = tokens.ids[max(0, len(tokens.ids) - wanted[i]):], tokens.words
                    if cuts[i] >= len(texts[i]):
                        tails[i] = tail
                        continue
                    first = len(words) - wanted[i]
                    if first > 0 and words[first] != words[0]:  # all after the word the cut splits
                        if earlier.get(i) == tail:
                            tails[i] = tail
                            continue
                        earlier[i] = tail
                    cuts[i] *= 2
                    unsettled.append(i)
            pending = unsettled
        return tails

    def encode(
        self,
        query: str,
        documents: Sequence[str],
        max_length: int | None = None,
        max_document_tokens: int | None = None,
        keep: str = "start",
    ) -> list[EncodedPair]:
        """One query against many documents: the query is tokenized once.

        `max_length` (at most the encoder's) and `max_document_tokens` tighten
        the cut for one call, as an API request may ask.
        """
        return self.encode_pairs([(query, d) for d in documents], max_length, max_document_tokens, keep)

    def encode_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        max_length: int | None = None,
        max_document_tokens: int | None = None,
        keep: str = "start",
    ) -> list[EncodedPair]:
        """Arbitrary pairs, in order; each distinct query is tokenized once.

        A document that does not fit keeps its first tokens (`keep="start"`, FlagEmbedding's only_second
        truncation) or its last (`keep="end"`, TEI's left truncation). Each text is tokenized one id past
        what the pair keeps of it, which says whether it was cut.
        """
        query_room, query_heads = self.query_heads([q for q, _ in pairs], max_length)
        rooms = []
        for query, _ in pairs:
            room = self.document_room(query_heads[query], query_room, max_length)
            rooms.append(room if max_document_tokens is None else min(room, max_document_tokens))
        cut = self.heads if keep == "start" else self.tails
        documents = cut([d for _, d in pairs], [room + 1 for room in rooms])
        return [
            self.pair(query_heads[q][:query_room], d[:room] if keep == "start" else d[max(0, len(d) - room):],
                      len(query_heads[q]) + len(d))
            for (q, _), d, room in zip(pairs, documents, rooms, strict=True)
        ]

    def limit(self, max_length: int | None) -> int:
        """The pair's cap for one call: `max_length` when given, never past the encoder's."""
        return min(max_length, self.max_length) if max_length else self.max_length

    def query_heads(self, queries: Sequence[str], max_length: int | None) -> tuple[int, dict[str, list[int]]]:
        """The query's budget under `max_length`, and each distinct query's first ids, one past that budget
        (so a longer list says the query was cut)."""
        # The query keeps its own budget, but leaves at least one token of room for the document.
        query_room = max(1, min(self.query_max_length, self.limit(max_length) - self.template.num_special_tokens - 1))
        distinct = list(dict.fromkeys(queries))
        return query_room, dict(zip(distinct, self.heads(distinct, [query_room + 1] * len(distinct)), strict=True))

    def document_room(self, query_head: list[int], query_room: int, max_length: int | None) -> int:
        """Tokens left for the document beside the query and the special tokens."""
        return self.limit(max_length) - self.template.num_special_tokens - min(len(query_head), query_room)

    def pair(self, query: list[int], document: list[int], text_tokens: int) -> EncodedPair:
        """The model input of `query` and `document` ids; `text_tokens` counts the two texts' tokens seen."""
        ids, types = self.template.build(query, document, self.with_token_types)
        return EncodedPair(ids, types, text_tokens + self.template.num_special_tokens)


def _groups(indices: list[int], sizes: list[int]) -> Iterator[list[int]]:
    """`indices` in runs of at most `_GROUP_CHARS` characters (a longer text alone)."""
    group: list[int] = []
    total = 0
    for i, size in zip(indices, sizes, strict=True):
        if group and total + size > _GROUP_CHARS:
            yield group
            group, total = [], 0
        group.append(i)
        total += size
    if group:
        yield group


def _untruncated_copy(tokenizer: Any) -> Tokenizer:
    rust = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    rust.no_truncation()
    rust.no_padding()
    return rust
