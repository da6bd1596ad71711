"""Prometheus metrics, on a registry owned by one app (no process globals to patch in tests)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rerankd.engine import EncodedPair

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_PAIRS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
            "rerankd_queue_pairs", "Pairs queued or running in the model.", ["model"], registry=r
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

    def observe_batch(self, model: str, pairs: Sequence[EncodedPair], seconds: float) -> None:
        self.inference_seconds.labels(model).observe(seconds)
        self.batch_size.labels(model).observe(len(pairs))
        self.batch_tokens.labels(model).observe(len(pairs) * max(p.num_tokens for p in pairs))
