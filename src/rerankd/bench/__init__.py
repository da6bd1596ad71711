"""Load generation against a rerank HTTP endpoint: closed loops, open (Poisson) loops, hang-ups, figures.

This package talks HTTP only. It imports the standard library, httpx and, for
`--plot`, matplotlib (the `bench` extra), and of rerankd only its errors and the
bundled corpus; never the model, engine, server or CLI, so a load generator
built on it uses no torch and leaves the CPU to the server it measures.

- `workload`: generated documents of known word counts (mixed or fixed), or a user's JSON-lines file;
- `bodies`: encoded request bodies and their pair counts;
- `client`: one request -> one `Outcome` (status, latency, Retry-After, usage);
- `closed_loop`, `open_loop`, `hangup`: the three ways of offering load;
- `schedule`: seeded Poisson arrival times;
- `summary`: goodput, percentiles, refusal figures;
- `prometheus`: read `/metrics`;
- `sweep`: levels of concurrency or arrival rate against one endpoint, and their table (`rerankd bench`);
- `plot`: the sweep's throughput and latency plot.

Example:
    >>> import asyncio
    >>> from rerankd.bench import open_loop, poisson_schedule, rerank_body, summarize
    >>> times = poisson_schedule(rate=4.0, duration=30, seed=0)
    >>> bodies = [rerank_body("query", [f"doc {i} {j}" for j in range(32)]) for i in range(len(times))]
    >>> phase = asyncio.run(open_loop("http://127.0.0.1:8000/v1/rerank", times, bodies))  # doctest: +SKIP
    >>> summarize(phase.outcomes, phase.wall_seconds)["by_status"]  # doctest: +SKIP
    {'200': 80, '429': 41}
"""

from rerankd.bench.bodies import BodyLike, RequestBody, as_body, count_pairs, rerank_body
from rerankd.bench.client import make_client, post, record_answer
from rerankd.bench.closed_loop import closed_loop, timed_closed_loop
from rerankd.bench.hangup import hang_ups
from rerankd.bench.open_loop import open_loop
from rerankd.bench.outcome import Outcome, PhaseResult
from rerankd.bench.prometheus import MetricWait, Sample, metric_sum, metric_sums, parse_samples, scrape, wait_for_metric
from rerankd.bench.schedule import poisson_schedule
from rerankd.bench.summary import error_kinds, latency_stats, percentile, summarize
from rerankd.bench.sweep import APIS, Sweep, endpoint, format_table, request_body, run_sweep
from rerankd.bench.workload import QUERY, DocumentStream, fixed_documents, mixed_documents, read_requests

__all__ = [
    "APIS",
    "QUERY",
    "BodyLike",
    "DocumentStream",
    "MetricWait",
    "Outcome",
    "PhaseResult",
    "RequestBody",
    "Sample",
    "Sweep",
    "as_body",
    "closed_loop",
    "count_pairs",
    "endpoint",
    "error_kinds",
    "fixed_documents",
    "format_table",
    "hang_ups",
    "latency_stats",
    "make_client",
    "metric_sum",
    "metric_sums",
    "mixed_documents",
    "open_loop",
    "parse_samples",
    "percentile",
    "poisson_schedule",
    "post",
    "read_requests",
    "record_answer",
    "request_body",
    "rerank_body",
    "run_sweep",
    "scrape",
    "summarize",
    "timed_closed_loop",
    "wait_for_metric",
]
