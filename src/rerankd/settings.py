"""One settings object for every entry point.

Precedence is defaults < environment (`RERANKD_<FLAG_IN_UPPER_SNAKE>`) < CLI
flags. The CLI builds its options from the field metadata below, so a flag,
its environment variable and its help text can't drift apart. Library users
pass the same names as keyword arguments. The environment is read here, by one
parser, for the CLI and for the server processes that start without one
(`serve --workers`, gunicorn, Ray Serve replicas).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rerankd.errors import ErrorKind, RerankdError

DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "fp16", "bf16", "int8")
TRUNCATION_MODES = ("truncate", "chunk", "error")
CHUNK_AGGREGATES = ("max", "mean")
BACKENDS = ("auto", "torch", "onnx", "openvino")
# How a model turns a pair into a score (docs/models.md): a one-label cross-encoder, or an LLM reranker.
MODEL_KINDS = ("auto", "cross-encoder", "qwen3-reranker", "flag-llm-reranker")
# Measured in benchmarks/RESULTS.md (issue 2): on CPU, budgets of 1-4k tokens beat 8-16k by 20-30%, and
# 2048 is as fast as 4096 (21.4 against 20.9 pairs/s). The smaller one halves the time of one batch, which
# is how long a request that arrives while the model runs waits for its turn (issue 10).
CPU_BATCH_TOKENS = 2048
CROSS_ENCODER_MAX_LENGTH = 512  # FlagReranker's default
GPU_BATCH_TOKENS = 32768


def _flag(help: str, *, choices: tuple[str, ...] | None = None, metavar: str | None = None) -> dict[str, Any]:
    return {"help": help, "choices": choices, "metavar": metavar}


@dataclass(frozen=True)
class Settings:
    model: str = field(
        default=DEFAULT_MODEL,
        metadata=_flag("Hugging Face hub id or local directory of a one-label cross-encoder.", metavar="ID|DIR"),
    )
    revision: str | None = field(
        default=None, metadata=_flag("Hub revision (branch, tag or commit) for hub models.", metavar="REV")
    )
    device: str = field(
        default="auto", metadata=_flag("Where the model runs; auto picks cuda, then mps, then cpu.", choices=DEVICES)
    )
    dtype: str = field(
        default="auto",
        metadata=_flag("Weights precision; auto is fp16 on CUDA and fp32 elsewhere. int8: dynamic quantisation on "
                       "CPU, bitsandbytes on CUDA; ONNX exports carry their own.", choices=DTYPES),
    )
    backend: str = field(
        default="auto",
        metadata=_flag("Runtime: torch; onnx (ONNX Runtime, for directories made by `rerankd export`); openvino "
                       "(CPU; an `export --format openvino` directory, or converted at load). auto: on the CPU, "
                       "the fastest of those the directory can run in the precision asked for, by a timed warm-up "
                       "(docs/backends.md).", choices=BACKENDS),
    )
    max_length: int | None = field(
        default=None,
        metadata=_flag("Most tokens per (query, document) pair; only the document is cut to fit. Default: the model "
                       "kind's, 512 for cross-encoders and flag-llm-reranker, 8192 for qwen3-reranker."),
    )
    query_max_length: int | None = field(
        default=None, metadata=_flag("Most tokens kept of the query (default: 3/4 of --max-length).")
    )
    max_batch_tokens: int | None = field(
        default=None,
        metadata=_flag(
            "Token budget of one model batch, counted as rows x longest row (padding included). "
            f"Default: {CPU_BATCH_TOKENS} on CPU, where small batches stay in cache, {GPU_BATCH_TOKENS} on a GPU."
        ),
    )
    max_batch_size: int = field(default=128, metadata=_flag("Most pairs in one model batch, whatever their length."))
    threads: int | None = field(
        default=None,
        metadata=_flag("Intra-op threads for the model on CPU (default: the cores this process may use, divided "
                       "by --workers)."),
    )
    model_kind: str = field(
        default="auto",
        metadata=_flag("How the model scores a pair; auto tells it from the config and the name (docs/models.md).",
                       choices=MODEL_KINDS),
    )
    instruction: str | None = field(
        default=None,
        metadata=_flag("LLM rerankers: the default instruction (qwen3-reranker) or prompt (flag-llm-reranker); a "
                       "request's own `instruction` wins. Default: the model card's.", metavar="TEXT"),
    )
    no_prefix_reuse: bool = field(
        default=False,
        metadata=_flag("LLM rerankers: run every pair whole instead of computing the batch's shared prefix (system "
                       "prompt, instruction, query) once; the scores are the same."),
    )
    calibration: tuple[str, ...] = field(
        default=(),
        metadata=_flag("Platt calibration written by `rerankd calibrate --fit-platt`: relevance scores become its "
                       "probabilities. NAME=FILE per served model (repeatable), or FILE with one model.",
                       metavar="[NAME=]FILE"),
    )
    min_score: float | None = field(
        default=None,
        metadata=_flag("Threshold on the relevance score (0..1, calibrated when a calibration is loaded): ranked "
                       "results below it are dropped after top_n. For the server, the default of a request's "
                       "min_score."),
    )


    # The HTTP server (`rerankd serve`).
    host: str = field(default="127.0.0.1", metadata=_flag("Address to listen on (0.0.0.0 in containers)."))
    port: int = field(default=8080, metadata=_flag("Port to listen on."))
    workers: int = field(
        default=1,
        metadata=_flag("Server processes, each with its own copy of the model (CPU scale-up); the cores are "
                       "shared out between them."),
    )
    api_key: tuple[str, ...] = field(
        default=(),
        metadata=_flag("API key required as 'Authorization: Bearer KEY' on inference routes (repeatable).",
                       metavar="KEY"),
    )
    cors_origin: tuple[str, ...] = field(
        default=(), metadata=_flag("Origin allowed by CORS (repeatable; '*' for any). Off when not given.")
    )
    strict_model_name: bool = field(
        default=False, metadata=_flag("Reject requests whose 'model' is not a served model name, even with one model.")
    )
    truncation: str = field(
        default="truncate",
        metadata=_flag("Pairs longer than --max-length: cut the document and report it (truncate), score it in "
                       "overlapping windows and keep the best (chunk), or refuse it (error: 413 from the server).",
                       choices=TRUNCATION_MODES),
    )
    chunk_overlap: int = field(
        default=64,
        metadata=_flag("With --truncation chunk: tokens that adjacent windows share, so a passage of a sentence or "
                       "two cut by one window's end is whole in the next (at most half a window)."),
    )
    chunk_aggregate: str = field(
        default="max",
        metadata=_flag("With --truncation chunk: a document's score from its windows' logits: the best (max, "
                       "Cohere's choice) or their mean.", choices=CHUNK_AGGREGATES),
    )
    max_chunks_per_doc: int = field(
        default=16,
        metadata=_flag("With --truncation chunk: most windows scored per document; the rest is cut and reported "
                       "as truncated. 16 windows of 512 cover about 7k document tokens."),
    )
    max_documents: int = field(default=1000, metadata=_flag("Most documents in one request (413 above)."))
    max_document_chars: int = field(
        default=200_000, metadata=_flag("Most characters in one document or query, checked before tokenizing (413).")
    )
    max_body_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_flag("Largest request body in bytes (413). The default holds --max-documents documents that "
                       "each fill --max-length in any script as JSON escapes it, and one at --max-document-chars "
                       "(docs/api.md)."),
    )
    max_concurrent_requests: int = field(
        default=512,
        metadata=_flag("Most requests admitted at once (tokenizing, queued or in the model); more get 429 at once, "
                       "before any work is spent on them. TEI's name and default."),
    )
    max_queue_wait: float = field(
        default=30.0,
        metadata=_flag("Seconds of work that may be queued ahead of a new request, at the measured throughput "
                       "(at most --request-timeout); past that it gets 429 with a Retry-After computed from the "
                       "queue (docs/reliability.md)."),
    )
    max_queued_pairs: int = field(
        default=16384,
        metadata=_flag("Most pairs queued for the model across requests; a request that would pass it gets 429, "
                       "one with more pairs than this on its own gets 413."),
    )
    request_timeout: float = field(
        default=120.0, metadata=_flag("Seconds a request may wait for its scores before it gets 503.")
    )
    stall_timeout: float = field(
        default=300.0,
        metadata=_flag("Seconds the model may go without finishing a batch while work is queued before /health "
                       "answers 503, so that an orchestrator restarts a hung process."),
    )
    drain_timeout: float = field(
        default=30.0, metadata=_flag("Seconds SIGTERM waits for requests in flight before the server exits.")
    )
    no_cache: bool = field(default=False, metadata=_flag("Turn the score cache off."))
    cache_size: int = field(default=100_000, metadata=_flag("Most pairs held by the in-process LRU score cache."))
    cache_url: str | None = field(
        default=None,
        metadata=_flag("Redis URL (redis://host:port/db) of a score cache shared by replicas, behind the LRU.",
                       metavar="URL"),
    )
    cache_ttl: int = field(default=7 * 24 * 3600, metadata=_flag("Seconds a score lives in Redis."))
    cache_timeout: float = field(
        default=0.25,
        metadata=_flag("Seconds a request waits on Redis (a free connection included) before scoring without it."),
    )
    cache_max_connections: int = field(
        default=16, metadata=_flag("Most connections to Redis per server process.")
    )
    cache_write_queue: int = field(
        default=10_000,
        metadata=_flag("Most pairs waiting to be written to Redis, in the background; past that, writes are "
                       "dropped (rerankd_cache_dropped_writes_total)."),
    )
    cache_breaker_threshold: int = field(
        default=3,
        metadata=_flag("Redis failures in a row (unreachable, or slower than --cache-timeout) after which "
                       "requests skip Redis until a probe in the background succeeds."),
    )
    cache_breaker_backoff: float = field(
        default=30.0,
        metadata=_flag("Most seconds between probes of a Redis that failed: the first comes after 1 s, each "
                       "failed one doubles the wait up to this."),
    )
    json_logs: bool = field(
        default=False,
        metadata=_flag("Log as JSON lines: one per request (id, sizes, timings), and every other record too."),
    )
    no_playground: bool = field(
        default=False, metadata=_flag("Turn off the web playground at /playground, a page to try requests on.")
    )
    quiet: bool = field(
        default=False,
        metadata=_flag("No access line per request; the start-up, ready and shutdown lines stay."),
    )

    # Ray Serve (`rerankd serve --ray`): the same app as autoscaled replicas, each with its own model and scheduler.
    ray: bool = field(
        default=False,
        metadata=_flag("Serve as a Ray Serve application: replicas autoscale, each reserves --threads CPUs "
                       "(default 1) and a GPU with --device cuda."),
    )
    ray_address: str | None = field(
        default=None,
        metadata=_flag("Ray cluster to deploy to ('auto', HOST:PORT or ray://HOST:10001); default: start a local "
                       "one.", metavar="ADDRESS"),
    )
    ray_min_replicas: int = field(default=1, metadata=_flag("Fewest Ray Serve replicas (0 scales to zero)."))
    ray_max_replicas: int = field(default=1, metadata=_flag("Most Ray Serve replicas."))
    ray_target_ongoing_requests: float = field(
        default=8.0,
        metadata=_flag("Requests in flight per replica that Ray's autoscaler aims at; a replica batches the "
                       "requests it holds, so this is well above 1."),
    )

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 8:
            raise _invalid(f"max_length must be at least 8, got {self.max_length}")
        if self.query_max_length is not None and self.query_max_length < 1:
            raise _invalid(f"query_max_length must be at least 1, got {self.query_max_length}")
        if self.query_max_length is not None and self.max_length is not None and self.query_max_length >= self.max_length:
            raise _invalid(
                f"query_max_length must be between 1 and max_length - 1 ({self.max_length - 1}), "
                f"got {self.query_max_length}"
            )
        if self.model_kind not in MODEL_KINDS:
            raise _invalid(f"model_kind must be one of {', '.join(MODEL_KINDS)}, got {self.model_kind!r}")
        for name in ("max_batch_tokens", "max_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise _invalid(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 1:
            raise _invalid(f"workers must be at least 1, got {self.workers}")
        if self.ray and self.workers > 1:
            raise _invalid("--ray and --workers are two ways to scale out; with Ray, use --ray-max-replicas")
        if not 0 <= self.ray_min_replicas <= self.ray_max_replicas or self.ray_max_replicas < 1:
            raise _invalid(f"Ray replicas need 0 <= min ({self.ray_min_replicas}) <= max ({self.ray_max_replicas}) "
                           "and max >= 1")
        if self.ray_target_ongoing_requests <= 0:
            raise _invalid(f"ray_target_ongoing_requests must be positive, got {self.ray_target_ongoing_requests}")
        if self.threads is not None and self.threads < 1:
            raise _invalid(f"threads must be at least 1, got {self.threads}")
        if self.device not in DEVICES and not self.device.startswith(("cuda:", "mps:")):
            raise _invalid(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        for name in ("max_documents", "max_document_chars", "max_body_bytes", "max_queued_pairs", "cache_size",
                     "cache_ttl", "max_concurrent_requests", "cache_max_connections", "cache_write_queue",
                     "cache_breaker_threshold"):
            if getattr(self, name) < 1:
                raise _invalid(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cache_url is not None and not self.cache_url.startswith(("redis://", "rediss://", "unix://")):
            raise _invalid(f"cache_url must be a redis://, rediss:// or unix:// URL, got {self.cache_url!r}")
        if self.request_timeout <= 0 or self.drain_timeout < 0 or self.cache_timeout <= 0 or self.stall_timeout <= 0:
            raise _invalid("request_timeout, cache_timeout and stall_timeout must be positive, and drain_timeout not "
                           "negative")
        if self.cache_breaker_backoff <= 0:
            raise _invalid(f"cache_breaker_backoff must be positive, got {self.cache_breaker_backoff:g}")
        if self.max_queue_wait <= 0:
            raise _invalid(f"max_queue_wait must be positive, got {self.max_queue_wait:g}")
        if self.backend not in BACKENDS:
            raise _invalid(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.chunk_overlap < 0 or self.max_chunks_per_doc < 1:
            raise _invalid(f"chunk_overlap must be 0 or more and max_chunks_per_doc at least 1, got "
                           f"{self.chunk_overlap} and {self.max_chunks_per_doc}")
        if self.chunk_aggregate not in CHUNK_AGGREGATES:
            raise _invalid(f"chunk_aggregate must be one of {', '.join(CHUNK_AGGREGATES)}, got {self.chunk_aggregate!r}")
        if self.truncation not in TRUNCATION_MODES:
            raise _invalid(f"truncation must be one of {', '.join(TRUNCATION_MODES)}, got {self.truncation!r}")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise _invalid(f"min_score is a relevance score in 0..1, got {self.min_score:g}")
        if self.dtype not in DTYPES:
            raise _invalid(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def queue_wait_limit(self) -> float:
        """--max-queue-wait, never past --request-timeout: a request admitted behind more work than it may
        wait for would time out after using the model."""
        return min(self.max_queue_wait, self.request_timeout)

    def lengths(self, default_max_length: int = CROSS_ENCODER_MAX_LENGTH) -> tuple[int, int]:
        """(max_length, query_max_length): --max-length or the model kind's default, and FlagEmbedding's rule
        that the query alone may use 3/4 of the pair's budget."""
        max_length = self.max_length if self.max_length is not None else default_max_length
        if self.query_max_length is not None and self.query_max_length >= max_length:
            raise _invalid(f"query_max_length must be below max_length ({max_length}), got {self.query_max_length}")
        return max_length, self.query_max_length if self.query_max_length is not None else max_length * 3 // 4

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)


SETTING_NAMES = tuple(f.name for f in fields(Settings))
# `rerankd serve` takes a list of models (RERANKD_MODEL, or --model repeated) instead of the `model` field.
SERVE_SETTINGS = tuple(name for name in SETTING_NAMES if name != "model")


def _invalid(message: str) -> RerankdError:
    return RerankdError(ErrorKind.INVALID_INPUT, message)


# --- the environment: RERANKD_<FIELD> ------------------------------------------------------------------

ENV_PREFIX = "RERANKD_"
# The spellings click's BOOL accepts, so a flag reads from the environment as it did when click parsed it.
_BOOLEANS = {
    "1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
    "0": False, "false": False, "f": False, "no": False, "n": False, "off": False,
}
_FIELD_TYPES = typing.get_type_hints(Settings)


def env_name(name: str) -> str:
    """The variable of a setting or flag: `max_batch_tokens` or `--max-batch-tokens` -> `RERANKD_MAX_BATCH_TOKENS`."""
    return ENV_PREFIX + name.lstrip("-").replace("-", "_").upper()


def env_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list from the environment: parts stripped, empty parts dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_env_value(name: str, raw: str) -> Any:
    """`raw`, the text of `RERANKD_<NAME>`, as a value of the Settings field `name`.

    A tuple field is a comma-separated list (see `env_list`), `X | None` reads as `X`
    (an unset variable is the None). Choices and ranges are left to `Settings` itself.

    Raises:
        RerankdError: INVALID_INPUT, naming the variable, when `raw` is not of the field's type.
    """
    kind = _FIELD_TYPES[name]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is tuple:
        return env_list(raw)
    if kind is bool:
        value = _BOOLEANS.get(raw.strip().lower())
        if value is None:
            raise _invalid(f"{env_name(name)} must be one of {', '.join(_BOOLEANS)}, got {raw!r}")
        return value
    if kind is str:
        return raw
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise _invalid(
                f"{env_name(name)} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
            ) from None
    raise TypeError(f"no rule to read Settings.{name} ({kind}) from the environment")


def values_from_env(names: Iterable[str] = SETTING_NAMES, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields among `names` whose `RERANKD_*` variable is set, converted; an empty variable counts as unset."""
    environ = os.environ if environ is None else environ
    return {name: parse_env_value(name, environ[env_name(name)]) for name in names if environ.get(env_name(name))}


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], Settings]:
    """What `rerankd serve` without flags serves: `(models, settings)` from `RERANKD_*` over the defaults.

    The models are RERANKD_MODEL as a comma-separated list of `[NAME=]ID|DIR` (default: DEFAULT_MODEL);
    `settings.model` keeps its default, since serve names its models in that list. This is how the
    processes started without the CLI (`serve --workers`, gunicorn, Ray Serve) get their settings.
    """
    environ = os.environ if environ is None else environ
    raw_models = environ.get(env_name("model"))
    models = env_list(raw_models) if raw_models else (DEFAULT_MODEL,)
    return models, Settings(**values_from_env(SERVE_SETTINGS, environ))
