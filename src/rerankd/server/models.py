"""The models a server serves: loading, warm-up, readiness and liveness; requests go to each model's ScoringService."""

from __future__ import annotations

import asyncio
import enum
import time
from concurrent.futures import ThreadPoolExecutor

from rerankd.cache import CacheKeyer, build_cache
from rerankd.engine.admission import InFlightLimit
from rerankd.engine.calibration import Calibration, load_calibrations
from rerankd.engine.service import ScoringService
from rerankd.engine.setup import build_engine
from rerankd.errors import ErrorKind, RerankdError
from rerankd.logs import status_log
from rerankd.model import LoadedModel, load_model
from rerankd.model.threads import model_threads
from rerankd.server.metrics import Metrics
from rerankd.settings import Settings


class State(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


def parse_model_specs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """`NAME=PATH_OR_ID` or a bare `PATH_OR_ID` (named after itself) -> [(name, source)]."""
    specs = []
    for value in values:
        name, sep, source = value.partition("=")
        if not sep:
            name, source = value, value
        if not name or not source:
            raise RerankdError(ErrorKind.INVALID_INPUT, f"--model {value!r}: expected NAME=PATH or PATH")
        specs.append((name, source))
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise RerankdError(ErrorKind.INVALID_INPUT, f"served model names must differ, got {', '.join(names)}")
    return specs


class ModelRegistry:
    """Every served model by name, and the server's readiness."""

    def __init__(self, settings: Settings, specs: list[tuple[str, str]], metrics: Metrics) -> None:
        if not specs:
            raise RerankdError(ErrorKind.INVALID_INPUT, "no model to serve; pass --model")
        self.settings = settings
        self.specs = specs
        self.metrics = metrics
        self.models: dict[str, ScoringService] = {}
        self.loaded: dict[str, LoadedModel] = {}  # what each model is, for /info
        self.state = State.LOADING
        self.error: str | None = None
        # Relevance of each model's logits (--calibration), read now so that a bad file fails the start.
        self.calibrations: dict[str, Calibration] = load_calibrations(settings.calibration, self.names)
        # Tokenization runs here, beside the model threads, so it overlaps inference. Only admitted requests
        # reach it, so its queue is bounded by --max-concurrent-requests.
        self._tokenize_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rerankd-tokenize")
        self.in_flight = InFlightLimit(settings.max_concurrent_requests)
        # One cache for every served model: the model's identity is part of each key.
        self.cache = build_cache(settings, metrics)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.specs]

    async def start(self) -> None:
        """Load and warm every model off the event loop; the server answers /health meanwhile."""
        try:
            for name, source in self.specs:
                self.models[name] = await asyncio.to_thread(self._load, name, source)
        except Exception as exc:
            self.state = State.FAILED
            self.error = str(exc)
            status_log.error("model loading failed: %s", exc)
            raise
        if self.state is State.LOADING:
            self.state = State.READY
            status_log.info("ready: serving %s", ", ".join(self.names))

    def _load(self, name: str, source: str) -> ScoringService:
        settings = self.settings.with_changes(model=source)
        status_log.info("loading %s%s", source, f" as {name}" if name != source else "")
        loaded = load_model(settings)
        engine = build_engine(settings, loaded)
        keyer = CacheKeyer(loaded.identity, engine.scorer.backend.name, loaded.dtype, engine.encoder.max_length,
                           engine.encoder.query_max_length, loaded.kind)
        service = ScoringService(name, settings, engine.encoder, engine.scorer, keyer, self.cache,
                                 self._tokenize_pool, self.in_flight, self.metrics)
        self.loaded[name] = loaded
        scorer = engine.scorer
        cores = model_threads(settings.threads, settings.workers)
        threads = f", {cores} CPU thread{'s' if cores > 1 else ''}" if loaded.device.type == "cpu" else ""
        status_log.info("model %s: %s (%s), %s on %s, %s%s, max length %d, batch budget %d tokens / %d pairs",
                        name, loaded.model_type, loaded.kind, scorer.backend.name, loaded.device, loaded.dtype, threads,
                        engine.encoder.max_length, scorer.max_batch_tokens, scorer.max_batch_size)
        if loaded.fixture is not None:
            status_log.warning("model %s is a random-weight test fixture (rerankd make-test-model): its scores "
                               "are not relevance", name)
        started = time.perf_counter()
        tokens_per_second = service.warm_up()
        status_log.info("model %s: warmed up in %.2f s (one batch of %d tokens, %.0f tokens/s)", name,
                        time.perf_counter() - started, scorer.max_batch_tokens, tokens_per_second)
        return service

    def get(self, name: str | None) -> ScoringService:
        if self.state is not State.READY:
            raise RerankdError(ErrorKind.TIMEOUT, f"the server is not ready ({self.state.value}); retry shortly")
        if name in self.models:
            return self.models[name]
        if not name or (len(self.models) == 1 and not self.settings.strict_model_name):
            return next(iter(self.models.values()))
        raise RerankdError(
            ErrorKind.MODEL_NOT_FOUND, f"model {name!r} is not served here; served models: {', '.join(self.names)}"
        )

    def abort(self, message: str) -> None:
        """Fail every request still waiting for a model with a 503 that says why."""
        for served in self.models.values():
            served.scheduler.fail_all(RerankdError(ErrorKind.TIMEOUT, message))

    def health(self) -> str | None:
        """Why the server can't score (a model thread dead or stalled), or None."""
        for served in self.models.values():
            problem = served.scheduler.health(self.settings.stall_timeout)
            if problem is not None:
                return f"{served.name}: {problem}"
        return None

    def report(self) -> None:
        """Refresh the queue gauges (the oldest request's age grows between batches)."""
        for served in self.models.values():
            served.scheduler.report()

    async def close(self) -> None:
        for served in self.models.values():
            served.scheduler.stop(timeout=5)
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            await self.cache.close()
