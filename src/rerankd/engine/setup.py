"""Build the encoder and scorer for a loaded model under one Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rerankd.engine.encoding import PairEncoder
from rerankd.engine.llm_encoding import FlagLLMPairEncoder, Qwen3PairEncoder
from rerankd.engine.scoring import CPU_PASS_TOKENS, BatchScorer
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model import Backend, LoadedModel
from rerankd.model.causal_backend import CausalLMBackend
from rerankd.model.kinds import CROSS_ENCODER, KINDS, QWEN3_RERANKER
from rerankd.model.runtime import create_backend, use_threads
from rerankd.model.threads import model_threads
from rerankd.settings import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, Settings

log = logging.getLogger(__name__)


@dataclass
class Engine:
    encoder: PairEncoder | Qwen3PairEncoder | FlagLLMPairEncoder
    scorer: BatchScorer


def build_engine(settings: Settings, loaded: LoadedModel) -> Engine:
    threads = model_threads(settings.threads, settings.workers)
    kind = KINDS[loaded.kind]
    max_length, query_max_length = settings.lengths(kind.default_max_length)
    limit = loaded.max_supported_length
    if max_length > limit:
        raise RerankdError(
            ErrorKind.INVALID_INPUT,
            f"max_length {max_length} is more than {loaded.path} supports ({limit} tokens)",
        )
    encoder: PairEncoder | Qwen3PairEncoder | FlagLLMPairEncoder
    backend: Backend
    if loaded.kind == CROSS_ENCODER:
        if settings.instruction is not None:
            log.warning("--instruction is for LLM rerankers; %s is a cross-encoder and ignores it", loaded.source)
        encoder = PairEncoder(loaded.tokenizer, max_length, query_max_length)
        backend = create_backend(loaded, threads)
    else:
        use_threads(loaded, threads)
        encoder_class = Qwen3PairEncoder if loaded.kind == QWEN3_RERANKER else FlagLLMPairEncoder
        encoder = encoder_class(loaded.tokenizer, max_length, query_max_length,
                                settings.instruction or kind.default_instruction or "")
        backend = CausalLMBackend(loaded, encoder.score_tokens, padding_side=encoder.padding_side,
                                  pad_id=encoder.pad_id, prefix_reuse=not settings.no_prefix_reuse)
    scorer = BatchScorer(
        backend,
        pad_id=encoder.pad_id,
        with_token_types=encoder.with_token_types,
        max_batch_tokens=settings.max_batch_tokens
        or (CPU_BATCH_TOKENS if loaded.device.type == "cpu" else GPU_BATCH_TOKENS),
        max_batch_size=settings.max_batch_size,
        # Tensor cores want widths in multiples of 8; on CPU padding only costs.
        pad_to_multiple_of=8 if loaded.device.type == "cuda" else 1,
        # On a CPU a pass costs about its padded tokens, so a batch of mixed lengths runs as narrower passes.
        # A GPU runs one wide pass in about the time of a narrow one; LLM rerankers share a prefix per pass.
        pass_tokens=CPU_PASS_TOKENS if loaded.device.type == "cpu" and loaded.kind == CROSS_ENCODER else None,
    )
    return Engine(encoder, scorer)
