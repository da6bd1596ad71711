"""Read a server's Prometheus text exposition: parse samples, sum a metric over labels, wait for a value."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Sample:
    """One sample line: `name{labels} value`."""

    name: str
    labels: dict[str, str]
    value: float


def parse_samples(text: str | None) -> list[Sample]:
    """Every sample in a text exposition; comments, blank and malformed lines are skipped.

    Example:
        >>> parse_samples('# HELP x y\\nrerankd_queue_pairs{model="m"} 3.0\\n')
        [Sample(name='rerankd_queue_pairs', labels={'model': 'm'}, value=3.0)]
    """
    samples = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = {k: re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group(0)], v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        samples.append(Sample(m.group(1), labels, value))
    return samples


def metric_sum(text: str | None, name: str, **labels: str) -> float:
    """The sum of metric `name` over every label set that has the given labels; 0 when there is none.

    Example:
        >>> text = 'rerankd_requests_total{route="/v1/rerank",status="499"} 2.0\\n' \\
        ...        'rerankd_requests_total{route="/v1/rerank",status="200"} 5.0\\n'
        >>> metric_sum(text, "rerankd_requests_total"), metric_sum(text, "rerankd_requests_total", status="499")
        (7.0, 2.0)
    """
    return sum(s.value for s in parse_samples(text)
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def metric_sums(text: str | None) -> dict[str, float]:
    """Every metric name, summed over its label sets.

    Example:
        >>> metric_sums('a{x="1"} 1\\na{x="2"} 2\\nb 5\\n')
        {'a': 3.0, 'b': 5.0}
    """
    sums: dict[str, float] = {}
    for s in parse_samples(text):
        sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums


async def scrape(url: str, client: httpx.AsyncClient | None = None, timeout: float = 30.0) -> str:
    """GET a `/metrics` URL and return its text; raises `httpx.HTTPError` on failure.

    Example:
        >>> text = asyncio.run(scrape("http://127.0.0.1:8000/metrics"))  # doctest: +SKIP
        >>> metric_sum(text, "rerankd_queue_pairs")  # doctest: +SKIP
        0.0
    """
    import httpx

    if client is None:
        async with httpx.AsyncClient(timeout=timeout) as own:
            return await scrape(url, own, timeout)
    response = await client.get(url, timeout=timeout)
    response.raise_for_status()
    return response.text


@dataclass(frozen=True)
class MetricWait:
    """How a `wait_for_metric` ended.

    Attributes:
        met: Whether the condition held before the deadline.
        value: The last value read (None if no scrape succeeded).
        seconds: Time from the call to the scrape that met the condition (or to the deadline).
        polls: Scrapes made.
    """

    met: bool
    value: float | None
    seconds: float
    polls: int


async def wait_for_metric(url: str, name: str, condition: Callable[[float], bool], *, timeout: float,
                          interval: float = 0.05, labels: dict[str, str] | None = None,
                          client: httpx.AsyncClient | None = None) -> MetricWait:
    """Scrape `url` every `interval` seconds until `condition(metric_sum(...))` holds, for at most `timeout` s.

    A failed scrape counts as a poll whose condition did not hold; it does not end the wait.

    Args:
        url: The `/metrics` URL.
        name: Metric name, e.g. `rerankd_queue_pairs`.
        condition: Called with the metric's sum over the matching label sets.
        timeout: Most seconds to wait.
        interval: Seconds between scrapes.
        labels: Only label sets with these labels are summed.
        client: An open client to reuse (default: one for the wait).

    Example:
        >>> drained = asyncio.run(wait_for_metric(  # doctest: +SKIP
        ...     "http://127.0.0.1:8000/metrics", "rerankd_queue_pairs", lambda v: v == 0, timeout=60))
        >>> drained.met, drained.seconds  # doctest: +SKIP
        (True, 0.35)
    """
    import httpx

    if client is None:
        async with httpx.AsyncClient(timeout=max(interval, 5.0)) as own:
            return await wait_for_metric(url, name, condition, timeout=timeout, interval=interval, labels=labels,
                                         client=own)
    started = time.perf_counter()
    value: float | None = None
    polls = 0
    while True:
        polls += 1
        try:
            value = metric_sum(await scrape(url, client), name, **(labels or {}))
        except httpx.HTTPError:
            pass
        else:
            if condition(value):
                return MetricWait(True, value, time.perf_counter() - started, polls)
        if time.perf_counter() - started + interval > timeout:
            return MetricWait(False, value, time.perf_counter() - started, polls)
        await asyncio.sleep(interval)
