"""Prometheus metrics, on a registry owned by one app (no process globals to patch in tests).

With several server processes (`serve --workers`, gunicorn) prometheus_client's
multiprocess mode is on: PROMETHEUS_MULTIPROC_DIR, set before the workers start,
holds one file of values per process, and /metrics merges them, so counters and
histograms are totals over the workers and the queue gauge sums the live ones.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_PAIRS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # prometheus_client chose its mode from this variable when it was imported; follow the same one.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        r = self.registry
        self.requests = Counter(
            "rerankd_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "rerankd_request_duration_seconds", "End-to-end request time by route.", ["route"], buckets=_SECONDS,
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            "rerankd_tokenization_duration_seconds", "Time to tokenize one request.", ["model"], buckets=_SECONDS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "rerankd_queue_duration_seconds", "Time a request waits before its first batch runs.", ["model"],
            buckets=_SECONDS, registry=r,
        )
        self.inference_seconds = Histogram(
            "rerankd_inference_duration_seconds", "Model time of one batch.", ["model"], buckets=_SECONDS, registry=r
        )
        self.batch_size = Histogram(
            "rerankd_batch_size", "Pairs in one model batch.", ["model"], buckets=_PAIRS, registry=r
        )
        self.batch_tokens = Histogram(
            "rerankd_batch_tokens", "Padded tokens (rows x longest row) in one model batch.", ["model"],
            buckets=_TOKENS, registry=r,
        )
        self.queue_pairs = Gauge(
            "rerankd_queue_pairs", "Pairs queued or running in the model.", ["model"], registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_requests = Gauge(
            "rerankd_queue_requests", "Requests queued or running in the model.", ["model"], registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_tokens = Gauge(
            "rerankd_queue_tokens", "Tokens of the pairs queued or running in the model.", ["model"], registry=r,
            multiprocess_mode="livesum",
        )
        self.oldest_queued_seconds = Gauge(
            "rerankd_queue_oldest_seconds", "Age of the oldest request not yet answered by the model.", ["model"],
            registry=r, multiprocess_mode="livemax",
        )
        self.estimated_wait_seconds = Gauge(
            "rerankd_estimated_wait_seconds",
            "Seconds the work queued or running takes at the measured throughput: the wait of a new request at "
            "least as big as any queued (admission refuses one past --max-queue-wait).",
            ["model"], registry=r, multiprocess_mode="livemax",
        )
        self.throughput = Gauge(
            "rerankd_throughput_tokens_per_second", "Measured model throughput, averaged over recent batches.",
            ["model"], registry=r, multiprocess_mode="livesum",
        )
        self.refused_requests = Counter(
            "rerankd_refused_requests", "Requests refused at the door, by reason: in_flight "
            "(--max-concurrent-requests), queue_wait (--max-queue-wait), queue_pairs (--max-queued-pairs), "
            "too_large (413: can never fit).", ["model", "reason"], registry=r,
        )
        self.truncated_documents = Counter(
            "rerankd_truncated_documents", "Documents cut to fit max_length.", ["model"], registry=r
        )

        self.cache_hits = Counter("rerankd_cache_hits", "Pairs found in the score cache.", ["layer"], registry=r)
        self.cache_misses = Counter("rerankd_cache_misses", "Pairs not in the score cache.", ["layer"], registry=r)
        self.cache_errors = Counter(
            "rerankd_cache_errors", "Cache operations that failed (the request went on without).", ["layer", "op"],
            registry=r,
        )
        self.cache_invalid_values = Counter(
            "rerankd_cache_invalid_values", "Values read back from the cache that were malformed or not finite "
            "(taken as misses).", ["layer"], registry=r,
        )
        self.cache_dropped_writes = Counter(
            "rerankd_cache_dropped_writes", "Pairs not written to the cache, by reason: queue_full "
            "(--cache-write-queue), error (the store failed the write), shutdown.", ["layer", "reason"], registry=r,
        )
        self.cache_breaker_open = Gauge(
            "rerankd_cache_breaker_open", "1 while the cache layer's circuit breaker is open and requests skip it "
            "(with several workers, the number of workers skipping it).", ["layer"], registry=r,
            multiprocess_mode="livesum",
        )

    # rerankd.telemetry.EngineMetrics
    def observe_tokenize(self, model: str, seconds: float) -> None:
        self.tokenize_seconds.labels(model).observe(seconds)

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        self.queue_seconds.labels(model).observe(seconds)

    def observe_batch(self, model: str, rows: int, padded_tokens: int, seconds: float) -> None:
        self.inference_seconds.labels(model).observe(seconds)
        self.batch_size.labels(model).observe(rows)
        self.batch_tokens.labels(model).observe(padded_tokens)

    def observe_queue(
        self, model: str, requests: int, pairs: int, tokens: int, oldest_seconds: float,
        estimated_wait_seconds: float, tokens_per_second: float,
    ) -> None:
        self.queue_requests.labels(model).set(requests)
        self.queue_pairs.labels(model).set(pairs)
        self.queue_tokens.labels(model).set(tokens)
        self.oldest_queued_seconds.labels(model).set(oldest_seconds)
        self.estimated_wait_seconds.labels(model).set(estimated_wait_seconds)
        self.throughput.labels(model).set(tokens_per_second)

    def refused(self, model: str, reason: str) -> None:
        self.refused_requests.labels(model, reason).inc()

    def truncated(self, model: str, documents: int) -> None:
        self.truncated_documents.labels(model).inc(documents)

    # rerankd.telemetry.CacheMetrics
    def cache_lookup(self, layer: str, hits: int, misses: int) -> None:
        self.cache_hits.labels(layer).inc(hits)
        self.cache_misses.labels(layer).inc(misses)

    def cache_error(self, layer: str, operation: str) -> None:
        self.cache_errors.labels(layer, operation).inc()

    def cache_invalid(self, layer: str, values: int) -> None:
        self.cache_invalid_values.labels(layer).inc(values)

    def cache_dropped(self, layer: str, pairs: int, reason: str) -> None:
        self.cache_dropped_writes.labels(layer, reason).inc(pairs)

    def cache_breaker(self, layer: str, is_open: bool) -> None:
        self.cache_breaker_open.labels(layer).set(int(is_open))

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every worker process in multiprocess mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        _forget_dead_processes(self.multiprocess_dir)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, self.multiprocess_dir)
        return generate_latest(merged)


def _forget_dead_processes(directory: str) -> None:
    """Drop the live gauges of worker processes that are gone, crashed ones included.

    uvicorn's supervisor has no hook for a worker's exit, so /metrics does the
    bookkeeping (prometheus_client's mark_process_dead) for the processes it no longer finds.
    """
    for path in Path(directory).glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)
        except PermissionError:  # alive, under another user
            pass
