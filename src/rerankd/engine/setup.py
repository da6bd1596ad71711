"""Build the encoder and scorer for a loaded model under one Settings."""

from __future__ import annotations

from dataclasses import dataclass

from rerankd.engine.encoding import PairEncoder
from rerankd.engine.scoring import BatchScorer
from rerankd.errors import ErrorKind, RerankdError
from rerankd.model import LoadedModel
from rerankd.model.runtime import create_backend
from rerankd.model.threads import model_threads
from rerankd.settings import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, Settings


@dataclass
class Engine:
    encoder: PairEncoder
    scorer: BatchScorer


def build_engine(settings: Settings, loaded: LoadedModel) -> Engine:
    limit = loaded.max_supported_length
    if settings.max_length > limit:
        raise RerankdError(
            ErrorKind.INVALID_INPUT,
            f"max_length {settings.max_length} is more than {loaded.path} supports ({limit} tokens)",
        )
    encoder = PairEncoder(loaded.tokenizer, settings.max_length, settings.effective_query_max_length)
    backend = create_backend(loaded, model_threads(settings.threads, settings.workers))
    scorer = BatchScorer(
        backend,
        pad_id=encoder.pad_id,
        with_token_types=encoder.with_token_types,
        max_batch_tokens=settings.max_batch_tokens
        or (CPU_BATCH_TOKENS if loaded.device.type == "cpu" else GPU_BATCH_TOKENS),
        max_batch_size=settings.max_batch_size,
        # Tensor cores want widths in multiples of 8; on CPU padding only costs.
        pad_to_multiple_of=8 if loaded.device.type == "cuda" else 1,
    )
    return Engine(encoder, scorer)
