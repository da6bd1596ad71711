"""Soak: does `rerankd serve` hold its memory flat over a long run of mixed, partly hostile traffic?

One server on the `mini` fixture with a small score cache (`--cache-size`, default 2,000 pairs), so the cache,
which legitimately grows, is full before the warm-up ends. For --duration seconds (20 minutes by default):

- `--clients` closed-loop clients (4), each request drawn from a seeded mix:
  - 45% repeats: one of 8 queries over documents from a fixed pool of 400, so most pairs are cache hits once
    warm (the pool's 3,200 pairs are more than the cache holds: it keeps evicting);
  - 40% new documents, 1-48 of them: cache misses;
  - 15% bad requests, in turn: an empty query (400), malformed JSON (422), a wrong type (422), more documents
    than --max-documents (413);
- every 15 s, 4 requests whose clients hang up after 0.5 s (disconnects).

The server's RSS (VmRSS from /proc) is sampled every --sample-every seconds. Growth is measured from the end of
the warm-up (--warmup, 180 s) to the end of the run, each point the median of the 5 samples around it, so a
transient allocation does not count; it is reported in percent and in bytes per request served after the
warm-up. Check: growth < 5%.

    python benchmarks/bench_soak.py                              # about 21 minutes
    python benchmarks/bench_soak.py --shape tiny --duration 60 --warmup 20 --out /tmp/soak.json   # smoke

Writes benchmarks/results/soak-<shape>.json (or --out): command, machine, versions, samples, figures, checks.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_server import Servers, _free_port, _wait_for, machine_info, model_dir, versions  # noqa: E402
from workload import QUERY, mixed_documents  # noqa: E402

from rerankd.bench import RequestBody, hang_ups, rerank_body, summarize, timed_closed_loop  # noqa: E402

GROWTH_LIMIT = 0.05
POOL_DOCS = 400
POOL_QUERIES = 8
HANG_UP_EVERY_S = 15.0
HANG_UPS_EACH = 4
HANG_UP_AFTER_S = 0.5
MEDIAN_OF = 5


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Traffic:
    """The seeded request mix; one generator per client, all drawing new documents from one shared stream."""

    def __init__(self, seed: int, max_documents: int) -> None:
        self.rng = random.Random(seed)
        self.pool = list(dict.fromkeys(mixed_documents(POOL_DOCS + 40, seed=seed)))[:POOL_DOCS]
        self.queries = [f"{QUERY} ({i})" for i in range(POOL_QUERIES)]
        self.fresh = self._fresh(seed + 1)
        self.bad = itertools.cycle([
            RequestBody.from_json({"query": "", "documents": ["a"]}),
            RequestBody(b'{"query": "q", "documents": ["a", ', 0),
            RequestBody.from_json({"query": "q", "documents": "not a list"}),
            rerank_body("q", ["d"] * (max_documents + 1)),
        ])
        self.kinds: Counter[str] = Counter()

    def _fresh(self, seed: int) -> Iterator[str]:
        for block in itertools.count():
            yield from mixed_documents(500, seed=seed * 100_003 + block)

    def client(self) -> Iterator[RequestBody]:
        while True:
            draw = self.rng.random()
            if draw < 0.45:
                self.kinds["repeat"] += 1
                docs = self.rng.sample(self.pool, self.rng.randint(4, 32))
                yield rerank_body(self.rng.choice(self.queries), docs)
            elif draw < 0.85:
                self.kinds["new"] += 1
                yield rerank_body(QUERY, [f"{next(self.fresh)} #{self.kinds['new']}"
                                          for _ in range(self.rng.randint(1, 48))])
            else:
                self.kinds["bad"] += 1
                yield next(self.bad)


async def soak(url: str, pid: int, args: argparse.Namespace, traffic: Traffic) -> dict[str, Any]:
    samples: list[dict[str, float]] = []
    done = asyncio.Event()
    phase_started = time.perf_counter()
    served = {"count": 0}

    async def sample() -> None:
        while not done.is_set():
            samples.append({"t": time.perf_counter() - phase_started, "rss": rss_bytes(pid) or 0,
                            "served": served["count"]})
            try:
                await asyncio.wait_for(done.wait(), args.sample_every)
            except asyncio.TimeoutError:
                pass

    async def disconnects() -> list[Any]:
        outcomes: list[Any] = []
        while not done.is_set():
            bodies = [rerank_body(QUERY, mixed_documents(32, seed=10_000 + len(outcomes) + i))
                      for i in range(HANG_UPS_EACH)]
            outcomes += (await hang_ups(url, bodies, after=HANG_UP_AFTER_S)).outcomes
            try:
                await asyncio.wait_for(done.wait(), HANG_UP_EVERY_S)
            except asyncio.TimeoutError:
                pass
        return outcomes

    def counted(source: Iterator[RequestBody]) -> Iterator[RequestBody]:
        for body in source:
            yield body
            served["count"] += 1  # resumed for the next body: the previous request was answered

    sampler = asyncio.create_task(sample())
    hang_up_task = asyncio.create_task(disconnects())
    phase = await timed_closed_loop(url, [counted(traffic.client()) for _ in range(args.clients)], args.duration,
                                    timeout=600)
    done.set()
    await sampler
    hung = await hang_up_task
    samples.append({"t": time.perf_counter() - phase_started, "rss": rss_bytes(pid) or 0,
                    "served": served["count"]})
    return {"phase": phase, "samples": samples, "hang_ups": hung}


def _around(samples: list[dict[str, float]], t: float) -> dict[str, float]:
    """The median RSS and served count of the MEDIAN_OF samples nearest to time t."""
    near = sorted(samples, key=lambda s: abs(s["t"] - t))[:MEDIAN_OF]
    return {"t": t, "rss": statistics.median(s["rss"] for s in near),
            "served": statistics.median(s["served"] for s in near)}


def figures(run: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    samples = run["samples"]
    start = _around(samples, args.warmup)
    end = _around(samples, samples[-1]["t"])
    served_after = max(end["served"] - start["served"], 1)
    growth = (end["rss"] - start["rss"]) / start["rss"]
    after_warmup = [s["rss"] for s in samples if s["t"] >= args.warmup]
    summary = summarize(run["phase"].outcomes, run["phase"].wall_seconds)
    hang_up_statuses = Counter(str(o.status) if o.status is not None else "hung up" for o in run["hang_ups"])
    result = {
        "requests": summary["requests"], "by_status": summary["by_status"],
        "transport_errors": summary["transport_errors"], "server_errors": summary["server_errors"],
        "hang_ups": dict(hang_up_statuses), "rss_start_bytes": samples[0]["rss"],
        "rss_after_warmup_bytes": start["rss"], "rss_end_bytes": end["rss"],
        "rss_max_after_warmup_bytes": max(after_warmup) if after_warmup else None,
        "growth_fraction": growth, "requests_after_warmup": served_after,
        "growth_bytes_per_request": (end["rss"] - start["rss"]) / served_after,
    }
    checks = [
        {"check": f"RSS growth after warm-up < {GROWTH_LIMIT:.0%}", "value": growth, "limit": GROWTH_LIMIT,
         "pass": growth < GROWTH_LIMIT},
        {"check": "no 5xx", "value": summary["server_errors"], "limit": 0, "pass": summary["server_errors"] == 0},
        {"check": "no transport errors", "value": len(summary["transport_errors"]), "limit": 0,
         "pass": not summary["transport_errors"]},
    ]
    return result, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="mini", choices=("tiny", "mini"))
    parser.add_argument("--duration", type=float, default=1200.0, help="seconds of traffic (default 20 minutes)")
    parser.add_argument("--warmup", type=float, default=180.0, help="seconds before RSS growth counts")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--cache-size", type=int, default=2000)
    parser.add_argument("--max-documents", type=int, default=1000, help="the server's, for the 413 request")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")

    model = model_dir(args.shape)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    port = _free_port()
    cmd = [sys.executable, "-m", "rerankd.cli.main", "serve", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--cache-size", str(args.cache_size), "--max-documents", str(args.max_documents)]
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as work:
        servers = Servers(Path(work))
        try:
            proc, log = servers.start("soak", cmd, env)
            _wait_for(f"http://127.0.0.1:{port}/ready", proc, log, deadline_s=600)
            print(f"soak: {shlex.join(cmd)} (pid {proc.pid}), {args.duration:g} s", file=sys.stderr)
            traffic = Traffic(args.seed, args.max_documents)
            run = asyncio.run(soak(f"http://127.0.0.1:{port}/v1/rerank", proc.pid, args, traffic))
            alive = proc.poll() is None
        finally:
            servers.stop_all()
    result, checks = figures(run, args)
    checks.append({"check": "the server is alive at the end", "value": alive, "limit": True, "pass": alive})
    out = args.out or HERE / "results" / f"soak-{args.shape}.json"
    out.write_text(json.dumps({
        "benchmark": "soak", "shape": args.shape, "command": shlex.join(["python", *sys.argv]),
        "server_command": shlex.join(cmd), "settings": vars(args) | {"out": str(out)},
        "request_mix": dict(traffic.kinds), "figures": result, "checks": checks,
        "samples": run["samples"], "machine": machine_info(), "versions": versions(),
    }, indent=1))
    mib = 1024 * 1024
    print("\n| figure | value |\n| --- | --- |")
    print(f"| requests (mix {dict(traffic.kinds)}) | {result['requests']} by status {result['by_status']} |")
    print(f"| hang-ups | {result['hang_ups']} |")
    print(f"| RSS at start / after warm-up / end | {result['rss_start_bytes'] / mib:.0f} / "
          f"{result['rss_after_warmup_bytes'] / mib:.0f} / {result['rss_end_bytes'] / mib:.0f} MiB |")
    print(f"| growth after warm-up | {result['growth_fraction']:+.2%}, "
          f"{result['growth_bytes_per_request']:+.0f} bytes per request over {result['requests_after_warmup']:.0f} |")
    print("\n| check | value | limit | pass |\n| --- | --- | --- | --- |")
    for c in checks:
        print(f"| {c['check']} | {c['value']} | {c['limit']} | {'yes' if c['pass'] else 'NO'} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
