"""`--backend auto`: load the model in each backend that can run it, time a short warm-up, keep the fastest.

Which runtime is fastest depends on the CPU, the model's shape and the library
versions (benchmarks/RESULTS.md, issues 5 and 17), so it is measured here rather
than guessed. Candidates come from `backend_candidates`: all run in the same
precision, so the choice changes speed, never scores beyond 1e-4.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from rerankd.model.backend import Backend
from rerankd.model.loading import LoadedModel, backend_candidates, load_backend, resolve_local_dir
from rerankd.model.runtime import create_backend
from rerankd.model.threads import model_threads
from rerankd.settings import CPU_BATCH_TOKENS, Settings

log = logging.getLogger(__name__)

# A typical passage's width; the row count fills the engine's token budget, as queued traffic does.
_WARMUP_WIDTH = 256
# After one untimed pass (first-shape compilation, allocations), timed passes until this many or this long.
_TIMED_PASSES = 3
_TIMED_SECONDS = 2.0


def load_model(settings: Settings) -> LoadedModel:
    """Load, validate and place the model named by `settings.model`, in the backend asked for or the fastest."""
    candidates = backend_candidates(settings, resolve_local_dir(settings.model))
    if len(candidates) == 1:
        return load_backend(settings, candidates[0])
    threads = model_threads(settings.threads, settings.workers)
    best: LoadedModel | None = None
    timings: dict[str, float] = {}
    for name in candidates:
        loaded = load_backend(settings, name)
        backend = create_backend(loaded, threads)
        batch = warmup_batch(loaded, settings)
        timings[name] = _time_forward(backend, batch)
        if best is None or timings[name] < timings[best.backend]:
            best = loaded  # the slower one is dropped here, so at most two copies are held at once
        del loaded, backend
    assert best is not None
    rows, width = batch["input_ids"].shape
    log.info("--backend auto: %s, the fastest on a %d x %d batch (%s)", best.backend, rows, width,
             ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items()))
    return replace(best, backend_timings=timings)


def warmup_batch(loaded: LoadedModel, settings: Settings) -> dict[str, np.ndarray]:
    """A full batch of the engine's token budget at a passage's width; the token ids don't matter to speed."""
    width = min(settings.max_length or _WARMUP_WIDTH, loaded.max_supported_length, _WARMUP_WIDTH)
    rows = max(1, min(settings.max_batch_size, (settings.max_batch_tokens or CPU_BATCH_TOKENS) // width))
    ids = np.random.default_rng(0).integers(0, int(loaded.config.vocab_size), size=(rows, width), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _time_forward(backend: Backend, batch: dict[str, np.ndarray]) -> float:
    """The fastest of a few timed forward passes, in seconds."""
    backend.forward(batch)
    best = float("inf")
    deadline = time.perf_counter() + _TIMED_SECONDS
    for _ in range(_TIMED_PASSES):
        started = time.perf_counter()
        backend.forward(batch)
        best = min(best, time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    return best
