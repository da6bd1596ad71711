"""The backend for LLM rerankers: a causal LM read at the last real position, with the batch's shared prefix
computed once.

The engine hands it right-padded arrays like any backend. It then:
- lays rows out on the side the reference pads on (`padding_side`);
- takes position ids from the attention mask, so a padded row sees the positions it would see alone (both
  reference codes pass none, so left padding shifts their rotary positions and moves scores with the batch);
- runs the rows' longest common prefix of token ids (system prompt, instruction, query) once, repeats its
  key/value cache across the batch and runs only the rest of each row;
- computes only the output-layer rows the score needs, only at each row's last real token: full-vocabulary
  logits for a batch would be gigabytes.

The logit of a row is sum(weight * logit(token)) over `score_tokens`: Qwen3-Reranker's (yes, +1), (no, -1), whose
sigmoid is the softmax p(yes), or FlagLLMReranker's (Yes, +1).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch

from rerankd.model.backend import TorchBackend, _onednn
from rerankd.model.loading import LoadedModel

# A shared prefix shorter than this is not worth a second forward pass.
MIN_PREFIX_TOKENS = 8


def common_prefix_length(rows: Sequence[np.ndarray]) -> int:
    """Length of the longest token-id prefix every row shares, leaving each row at least its last token."""
    limit = min(len(r) for r in rows) - 1
    if limit <= 0:
        return 0
    first = rows[0][:limit]
    same = np.ones(limit, dtype=bool)
    for row in rows[1:]:
        same &= row[:limit] == first
    differs = np.flatnonzero(~same)
    return int(differs[0]) if differs.size else limit


class CausalLMBackend(TorchBackend):
    """Scores rows with a *ForCausalLM model; see the module docstring."""

    def __init__(
        self,
        loaded: LoadedModel,
        score_tokens: Sequence[tuple[int, float]],
        *,
        padding_side: str,
        pad_id: int,
        prefix_reuse: bool,
    ) -> None:
        super().__init__(loaded)
        causal = loaded.model
        assert causal is not None
        self._decoder = causal.get_decoder()
        # transformers 5 renamed `past_key_values` to `cache`; 4.x knows only the old name.
        self._cache_arg = "cache" if "cache" in inspect.signature(self._decoder.forward).parameters else "past_key_values"
        head = causal.get_output_embeddings()
        ids = torch.tensor([token for token, _ in score_tokens], device=loaded.device)
        self._head_rows = head.weight.detach()[ids]  # (tokens, hidden), in the model's dtype
        self._head_bias = None if getattr(head, "bias", None) is None else head.bias.detach()[ids]
        self._weights = torch.tensor([w for _, w in score_tokens], dtype=torch.float32, device=loaded.device)
        self._softcap = getattr(loaded.config, "final_logit_softcapping", None)
        self.padding_side = padding_side
        self.pad_id = pad_id  # masked out, whatever it is
        self.prefix_reuse = prefix_reuse

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        lengths = inputs["attention_mask"].sum(axis=1)
        rows = [ids[:n] for ids, n in zip(inputs["input_ids"], lengths, strict=True)]
        prefix = common_prefix_length(rows) if self.prefix_reuse and len(rows) > 1 else 0
        if prefix < MIN_PREFIX_TOKENS:
            prefix = 0
        with torch.inference_mode(), _onednn(self._onednn):
            hidden = self._last_hidden(rows, prefix)
            logits = hidden @ self._head_rows.T
            if self._head_bias is not None:
                logits = logits + self._head_bias
            logits = logits.float()
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            return (logits @ self._weights).cpu().numpy()

    def _last_hidden(self, rows: list[np.ndarray], prefix: int) -> torch.Tensor:
        """The final hidden state at each row's last token, (rows, hidden)."""
        ids, mask = self._pad([r[prefix:] for r in rows])
        cache = None
        if prefix:
            shared = torch.from_numpy(rows[0][:prefix]).to(self._device)[None]
            out = self._decoder(input_ids=shared, use_cache=True)
            cache = getattr(out, "cache", None) or out.past_key_values
            cache.batch_repeat_interleave(len(rows))
            mask = torch.cat([torch.ones(len(rows), prefix, dtype=mask.dtype, device=self._device), mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
        out = self._decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=cache is not None,
                            **{self._cache_arg: cache})
        tail = mask[:, prefix:]
        last = tail.shape[1] - 1 - tail.flip(-1).argmax(-1)  # each row's last real token
        return out.last_hidden_state[torch.arange(len(rows), device=self._device), last]

    def _pad(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if self.padding_side == "left" else slice(0, len(row))
            ids[i, span] = row
            mask[i, span] = 1
        return torch.from_numpy(ids).to(self._device), torch.from_numpy(mask).to(self._device)
