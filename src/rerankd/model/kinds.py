"""Model kinds: how a model turns a (query, document) pair into one logit, and how rerankd tells them apart.

- `cross-encoder`: a one-label *ForSequenceClassification model (bge-reranker-v2-m3); the logit is its output.
- `qwen3-reranker`: Qwen3-Reranker, a causal LM; the logit is logit("yes") - logit("no") at the last position
  of the model card's chat template, so its sigmoid is the card's softmax p(yes).
- `flag-llm-reranker`: FlagEmbedding's `FlagLLMReranker` (BAAI/bge-reranker-v2-gemma); the logit is
  logit("Yes") at the last position of `A: query \\n B: passage \\n prompt`.

The kind comes from `--model-kind`, else from the config (a *ForSequenceClassification model is a
cross-encoder) and, for causal LMs, from the model's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import CROSS_ENCODER_MAX_LENGTH

CROSS_ENCODER = "cross-encoder"
QWEN3_RERANKER = "qwen3-reranker"
FLAG_LLM_RERANKER = "flag-llm-reranker"
LLM_KINDS = (QWEN3_RERANKER, FLAG_LLM_RERANKER)

# The model card's default instruction (Qwen/Qwen3-Reranker-*).
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
# FlagEmbedding 1.4.2 BaseLLMReranker's default prompt.
FLAG_DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing "
    "a prediction of either 'Yes' or 'No'."
)


@dataclass(frozen=True)
class KindInfo:
    description: str
    default_max_length: int
    default_instruction: str | None


KINDS: dict[str, KindInfo] = {
    CROSS_ENCODER: KindInfo("a one-label *ForSequenceClassification model, e.g. BAAI/bge-reranker-v2-m3",
                            CROSS_ENCODER_MAX_LENGTH, None),
    QWEN3_RERANKER: KindInfo("a Qwen3 causal LM scored as p(yes), e.g. Qwen/Qwen3-Reranker-0.6B", 8192,
                             QWEN3_DEFAULT_INSTRUCTION),
    # FlagEmbedding's max_length default for FlagLLMReranker.
    FLAG_LLM_RERANKER: KindInfo("a causal LM scored like FlagEmbedding's FlagLLMReranker, e.g. "
                                "BAAI/bge-reranker-v2-gemma", 512, FLAG_DEFAULT_PROMPT),
}


def _kinds_help() -> str:
    return "; ".join(f"{name} ({info.description})" for name, info in KINDS.items())


def detect_kind(config: Any, name: str, requested: str, where: str) -> str:
    """The kind of the model `config` describes; `name` is its hub id and directory, `requested` --model-kind."""
    architectures = list(getattr(config, "architectures", None) or [])
    causal = any(a.endswith("ForCausalLM") for a in architectures)
    if requested not in ("auto", CROSS_ENCODER):
        if not causal:
            raise RerankdError(
                ErrorKind.MODEL_LOAD,
                f"--model-kind {requested} needs a causal LM (*ForCausalLM); {where} is a "
                f"{', '.join(architectures) or 'model without architectures'}",
            )
        return requested
    if requested == CROSS_ENCODER or not causal:
        return CROSS_ENCODER  # loading checks that it is a one-label classifier
    fixture = getattr(config, "rerankd_fixture", None)
    if isinstance(fixture, dict) and fixture.get("kind") in LLM_KINDS:
        return str(fixture["kind"])
    lowered = name.lower()
    if "qwen3-reranker" in lowered or (getattr(config, "model_type", "") == "qwen3" and "reranker" in lowered):
        return QWEN3_RERANKER
    if "bge-reranker" in lowered and not any(s in lowered for s in ("layerwise", "lightweight")):
        return FLAG_LLM_RERANKER
    raise RerankdError(
        ErrorKind.MODEL_LOAD,
        f"cannot tell how {where} ({', '.join(architectures)}) scores a pair: its name matches no known LLM "
        f"reranker. Pass --model-kind with one of: {_kinds_help()}",
    )
