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

from rerankd.engine.chunking import ChunkedDocument, ChunkPolicy, Window, spans_of
from rerankd.engine.encoding import EncodedPair, TextTokens
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


def check_lengths(encoder: object, keep: str) -> None:
    """Keeping a document's end (TEI's truncation_direction Left) is a cross-encoder feature: an LLM kind
    refuses it rather than score something else than asked (docs/models.md)."""
    kind = getattr(encoder, "kind", None)
    if kind is not None and keep == "end":
        raise RerankdError(ErrorKind.INVALID_INPUT,
                           f"truncation_direction Left (keep a document's end) is not available for {kind} models: "
                           "send Right (its start is kept), or truncation chunk to score all of it in windows")


def _words(text: str, word_ids: list[int | None], offsets: list[tuple[int, int]]) -> list[int]:
    """Word numbers for the window rule: a token begins a word where the tokenizer's pre-tokenizer says so, or
    where it starts with or follows whitespace (Gemma's tokenizer has no pre-tokenizer to say it)."""
    words: list[int] = []
    for k, (start, _) in enumerate(offsets):
        begins = k > 0 and ((word_ids[k] is not None and word_ids[k] != word_ids[k - 1])
                            or (0 < start < len(text) and (text[start].isspace() or text[start - 1].isspace())))
        words.append(words[-1] + begins if words else 0)
    return words


class _LLMEncoder:
    accepts_instruction = True
    kind: str
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

    def chunk_pairs(self, pairs: Sequence[tuple[str, str]], policy: ChunkPolicy, max_length: int | None = None,
                    max_document_tokens: int | None = None, instruction: str | None = None) -> list[ChunkedDocument]:
        """Each document in windows (chunking.py's rule on its own tokens), each window scored as the pair
        (query, window text) exactly as `encode_pairs` scores it: query, instruction and template stay whole.

        The room beside them is measured on the pair with an empty document; the text at a window's edges
        may tokenize a little differently inside the template, so a window that comes out cut is made
        shorter by what was cut until it fits."""
        limit = min(max_length, self.max_length) if max_length else self.max_length
        instruction = instruction or self.default_instruction
        queries = [q for q, _ in pairs]
        empty = dict(zip(queries, self._encode(queries, [""] * len(queries), limit, instruction), strict=True))
        rooms = [max(1, self._document_room(empty[q], limit, instruction)) for q in queries]
        documents = [TextTokens(e.ids, _words(d, e.word_ids, e.offsets), e.offsets) for (_, d), e in
                     zip(pairs, self._rust.encode_batch([d for _, d in pairs], add_special_tokens=False), strict=True)]
        chunked = []
        for (query, document), tokens, room in zip(pairs, documents, rooms, strict=True):
            base_cut = empty[query].full_length - empty[query].num_tokens  # the query's own cut (Flag)
            while True:
                cap = room * policy.max_chunks if max_document_tokens is None else min(room * policy.max_chunks,
                                                                                       max_document_tokens)
                spans, cut = spans_of(tokens, room, cap, min(policy.overlap, room // 2), policy.max_chunks)
                edges = [(tokens.offsets[a][0], tokens.offsets[b - 1][1]) if b > a else (0, 0) for a, b in spans]
                encoded = self._encode([query] * len(edges), [document[a:b] for a, b in edges], limit, instruction)
                over = max(p.full_length - p.num_tokens - base_cut for p in encoded)
                if over <= 0 or room == 1:
                    break
                room = max(1, room - over)
            windows = [Window(p, a, b) for p, (a, b) in zip(encoded, edges, strict=True)]
            chunked.append(ChunkedDocument(windows, cut or base_cut > 0 or over > 0))
        return chunked

    def _document_room(self, empty: EncodedPair, limit: int, instruction: str) -> int:
        """Document tokens that fit beside the query and template of `empty` (the pair with no document)."""
        raise NotImplementedError

    def _encode(self, queries: list[str], documents: list[str], limit: int, instruction: str) -> list[EncodedPair]:
        raise NotImplementedError


class Qwen3PairEncoder(_LLMEncoder):
    """The Qwen3-Reranker model card's `process_inputs`: prefix + tokenizer(formatted pair, truncated to
    max_length - prefix - suffix) + suffix; padded on the left."""

    kind = "qwen3-reranker"

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

    def _document_room(self, empty: EncodedPair, limit: int, instruction: str) -> int:
        return limit - empty.num_tokens

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

    kind = "flag-llm-reranker"

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

    def _document_room(self, empty: EncodedPair, limit: int, instruction: str) -> int:
        # The passage ("B: " + document) may have `limit` tokens, and the pair before the final sep + prompt
        # limit + len(sep) + len(prompt); `empty` is that pair with "B: " alone.
        prompt = len(self.token_ids([instruction])[0])
        passage_head = len(self.token_ids([FLAG_PASSAGE_INSTRUCTION])[0])
        first_and_second = empty.num_tokens - len(self.sep_ids) - prompt
        return min(limit - passage_head, limit + len(self.sep_ids) + prompt - first_and_second)

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
