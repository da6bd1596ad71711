"""`rerankd bench`: measure a running rerank server (rerankd, or any that speaks one of its APIs) over HTTP.

The command over `rerankd.bench`, the load generator the benchmarks in benchmarks/ use too.
"""

from __future__ import annotations

import itertools
import json
import platform
import sys
from datetime import datetime, timezone
from typing import Any

import click
from tqdm import tqdm

from rerankd import __version__
from rerankd.bench.outcome import Outcome
from rerankd.bench.sweep import APIS, Sweep, endpoint, format_table, run_sweep
from rerankd.bench.workload import MIXED, generated_requests, read_requests
from rerankd.cli.options import option
from rerankd.errors import ErrorKind, RerankdError

# A client's flags read variables of their own: RERANKD_API_KEY is the server's list of keys, RERANKD_SEED
# make-test-model's seed, so `bench --api-key` reads RERANKD_BENCH_API_KEY.
ENV_PREFIX = "RERANKD_BENCH_"
DEFAULT_CONCURRENCY = (1, 4, 16)
DEFAULT_DURATION_S = 60.0


def bench_option(*decls: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    long_flag = max((d for d in decls if d.startswith("--")), key=len)
    return option(*decls, envvar=ENV_PREFIX + long_flag[2:].replace("-", "_").upper(), **kwargs)


class NumberList(click.ParamType):
    """A comma-separated list of positive numbers: `1,4,16`."""

    def __init__(self, kind: type[int] | type[float]) -> None:
        self.kind = kind
        self.name = "N[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(self.kind(part) for part in str(value).split(",") if part.strip())
        except ValueError:
            self.fail(f"expected comma-separated {'integers' if self.kind is int else 'numbers'}, got {value!r}",
                      param, ctx)
        if not numbers or any(n <= 0 for n in numbers):
            self.fail(f"expected positive numbers, got {value!r}", param, ctx)
        return numbers


class DocWords(click.ParamType):
    name = "mixed|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if value == MIXED or isinstance(value, int):
            return value
        if str(value).isdigit() and int(value) > 0:
            return int(value)
        self.fail(f"expected 'mixed' or a number of words (50, 150, 400, ...), got {value!r}", param, ctx)


@click.command()
@bench_option("--url", required=True, metavar="URL",
              help="The server to measure: its address (http://HOST:PORT; --api picks the path) or the full URL "
                   "of its rerank endpoint. Nothing else is sent anywhere.")
@bench_option("--api", type=click.Choice(APIS), default="cohere", show_default=True,
              help="Request shape and path: cohere (/v2/rerank), jina and vllm (/v1/rerank), tei (/rerank, texts).")
@bench_option("--model", metavar="NAME", help="The requests' 'model' field (needed when a server serves several).")
@bench_option("--documents", type=click.IntRange(min=1), default=32, show_default=True,
              help="Documents per request.")
@bench_option("--doc-words", type=DocWords(), default=MIXED, show_default=True,
              help="Words per generated document: mixed (20% of 20-60, 60% of 80-200, 20% of 250-450, as RAG "
                   "retrieval hands them over) or a number such as 50, 150 or 400. Every document is distinct, so "
                   "a score cache can't help; tokens are counted from the server's 'usage'.")
@bench_option("--data", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help='Send these requests instead: JSON lines {"query": ..., "documents": [...]}, in turn, again from '
                   "the top when used up (--documents and --doc-words are then not used).")
@bench_option("--concurrency", type=NumberList(int),
              help="Closed loop: clients that each send their next request when the previous one is answered; a "
                   "comma-separated list is a sweep. Default: 1,4,16 (when --rate is not given).")
@bench_option("--rate", type=NumberList(float),
              help="Open loop instead: Poisson arrivals per second, whatever the answers; a list is a sweep.")
@bench_option("--duration", type=click.FloatRange(min=0, min_open=True),
              help=f"Seconds each level sends requests (default: {DEFAULT_DURATION_S:g} when --requests is not "
                   "given).")
@bench_option("--requests", type=click.IntRange(min=1), help="Requests per level (with --duration: whichever "
                                                              "bound comes first).")
@bench_option("--api-key", metavar="KEY", help="Sent as 'Authorization: Bearer KEY'.")
@bench_option("--seed", type=int, default=0, show_default=True, help="Seed of the generated documents and arrivals.")
@bench_option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              help="Seconds a request may take before it counts as failed (ReadTimeout).")
@bench_option("--out", type=click.Path(dir_okay=False, writable=True), metavar="FILE.json",
              help="Write the settings and every level's figures as JSON.")
@bench_option("--plot", type=click.Path(dir_okay=False, writable=True), metavar="FILE.png",
              help="Draw throughput and p50/p95/p99 latency over the sweep (matplotlib: pip install "
                   "'rerankd[bench]').")
def bench(url: str, api: str, model: str | None, documents: int, doc_words: int | str, data: str | None,
          concurrency: tuple[int, ...] | None, rate: tuple[float, ...] | None, duration: float | None,
          requests: int | None, api_key: str | None, seed: int, timeout: float, out: str | None,
          plot: str | None) -> None:
    """Measure a running rerank server: throughput and latency at each concurrency (closed loop) or arrival rate
    (open loop, Poisson), like `vllm bench serve`.

    Prints a table per level: pairs/s and requests/s answered 200, tokens/s, p50/p95/p99 latency of the 200s,
    and failed requests by status. One request is sent first, not counted, to check the endpoint answers.

    \b
    Example:
        rerankd bench --url http://127.0.0.1:8080 --concurrency 1,4,16 --duration 30 --plot latency.png
    """
    if concurrency and rate:
        raise click.UsageError("give --concurrency (closed loop) or --rate (open loop), not both")
    if plot is not None:
        from rerankd.bench.plot import require_matplotlib

        require_matplotlib()
    if duration is None and requests is None:
        duration = DEFAULT_DURATION_S
    try:
        workload = (itertools.cycle(read_requests(data)) if data is not None
                    else generated_requests(documents, doc_words, seed))
    except (OSError, ValueError) as exc:
        raise RerankdError(ErrorKind.INVALID_INPUT, f"--data: {exc}") from None
    sweep = Sweep(
        url=endpoint(url, api), api=api, requests=workload,
        concurrency=() if rate else concurrency or DEFAULT_CONCURRENCY, rates=rate or (),
        duration=duration, count=requests, model=model,
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {}, seed=seed, timeout=timeout,
    )
    progress = _Progress(sweep.mode, requests)
    try:
        records = run_sweep(sweep, progress)
    finally:
        progress.close()
    click.echo(format_table(sweep.mode, records))
    options = {"url": url, "api": api, "model": model, "documents": documents, "doc_words": doc_words, "data": data,
               "duration": duration, "requests": requests, "seed": seed, "timeout": timeout,
               "api_key": "(given)" if api_key else None}
    result = {"rerankd_version": __version__, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "client": {"host": platform.node(), "python": platform.python_version()},
              "endpoint": sweep.url, "mode": sweep.mode, "options": options, "levels": records}
    if out is not None:
        with open(out, "w", encoding="utf-8") as file:
            json.dump(result, file, indent=1)
        click.echo(f"wrote {out}", err=True)
    if plot is not None:
        from rerankd.bench.plot import plot_sweep

        length = "mixed-length" if doc_words == MIXED else f"{doc_words}-word"
        workload_name = f"requests from {data}" if data else f"{documents} {length} docs per request"
        plot_sweep(sweep.mode, records, plot, f"{sweep.url} ({api}), {workload_name}")
        click.echo(f"wrote {plot}", err=True)


class _Progress:
    """One progress bar per level on stderr (off when stderr is not a terminal), with its failed requests."""

    def __init__(self, mode: str, total: int | None) -> None:
        self.mode = mode
        self.total = total
        self.bar: tqdm | None = None
        self.failed = 0

    def __call__(self, level: float):  # type: ignore[no-untyped-def]
        self.close()
        self.failed = 0
        self.bar = tqdm(total=self.total, desc=f"{self.mode} {level:g}", unit="req", file=sys.stderr, disable=None,
                        dynamic_ncols=True)
        return self.update

    def update(self, outcome: Outcome) -> None:
        assert self.bar is not None
        if not outcome.ok:
            self.failed += 1
            self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
