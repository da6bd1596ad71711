"""Score cache: a workload where half the pairs repeat, with and without the cache, and a fully cached request.

    python benchmarks/bench_cache.py --shape mini --requests 40

Each request is one query with 32 mixed-length documents: 16 seen in an earlier
request (the same query and document, so a cache hit) and 16 new. One client
sends them in turn to `rerankd serve` with default settings, then to
`rerankd serve --no-cache`. Last, one 32-document request is sent again and
again once it is cached, timing the round trip as the client sees it.
Writes benchmarks/results/cache-<shape>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_server import Servers, _free_port, _percentile, _wait_for, machine_info, model_dir, versions
from workload import QUERY, mixed_documents

HERE = Path(__file__).resolve().parent


def workload(requests: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """The 32 documents scored first, then the requests: each half repeats, half new."""
    rng = random.Random(seed)
    fresh = iter(mixed_documents(requests * 16 + 32, seed=seed))
    seen: list[str] = [next(fresh) for _ in range(32)]
    prime = list(seen)
    bodies = []
    for _ in range(requests):
        new = [next(fresh) for _ in range(16)]
        docs = rng.sample(seen, 16) + new
        rng.shuffle(docs)
        seen.extend(new)
        bodies.append(docs)
    return prime, bodies


def run_server(
    servers: Servers, path: Path, extra: list[str], prime: list[str], bodies: list[list[str]], repeats: int
) -> dict:
    port = _free_port()
    cmd = [sys.executable, "-m", "rerankd.cli.main", "serve", "--model", str(path), "--port", str(port), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    proc, log = servers.start("rerankd" + "".join(extra), cmd, env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base + "/ready", proc, log, 600)
        with httpx.Client(base_url=base, timeout=600) as client:
            # Prime: the 32 documents the first requests repeat from.
            client.post("/v1/rerank", json={"query": QUERY, "documents": prime}).raise_for_status()
            latencies, hits = [], 0
            started = time.perf_counter()
            for docs in bodies:
                t = time.perf_counter()
                response = client.post("/v1/rerank", json={"query": QUERY, "documents": docs})
                response.raise_for_status()
                latencies.append(time.perf_counter() - t)
                hits += int(response.headers["x-cache-hits"])
            wall = time.perf_counter() - started
            cached_body = {"query": QUERY, "documents": bodies[0]}
            client.post("/v1/rerank", json=cached_body).raise_for_status()
            cached, server_ms = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                response = client.post("/v1/rerank", json=cached_body)
                cached.append(time.perf_counter() - t)
                server_ms.append(float(response.headers["x-total-time"]))
                assert response.headers["x-cache-hits"] == ("32" if "--no-cache" not in extra else "0")
    finally:
        servers.stop(proc)
    pairs = 32 * len(bodies)
    return {
        "command": " ".join(cmd[1:]),
        "pairs_per_s": pairs / wall,
        "wall_seconds": wall,
        "cache_hit_fraction": hits / pairs,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": _percentile(latencies, 95),
        "repeat_request_p50_ms": statistics.median(cached) * 1000,
        "repeat_request_p99_ms": _percentile(cached, 99) * 1000,
        "repeat_request_server_p50_ms": statistics.median(server_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mini", choices=["tiny", "mini", "base"])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=50, help="sends of the fully cached request")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    path = model_dir(args.shape)
    prime, bodies = workload(args.requests, args.seed)
    servers = Servers(Path(tempfile.mkdtemp(prefix="bench-cache-")))
    try:
        cached = run_server(servers, path, [], prime, bodies, args.repeats)
        uncached = run_server(servers, path, ["--no-cache"], prime, bodies, args.repeats)
    finally:
        servers.stop_all()
    result = {
        "shape": args.shape,
        "requests": args.requests,
        "with_cache": cached,
        "without_cache": uncached,
        "speedup": cached["pairs_per_s"] / uncached["pairs_per_s"],
        "machine": machine_info(),
        "versions": versions(),
        "command": f"python benchmarks/bench_cache.py --shape {args.shape} --requests {args.requests} "
        f"--repeats {args.repeats} --seed {args.seed}",
    }
    out = HERE / "results" / f"cache-{args.shape}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"shape {args.shape}: {args.requests} requests x 32 documents, half of the pairs seen before, 1 client")
    print("| server | pairs/s | cache hits | p50 latency | p95 latency | fully cached 32-doc request p50 / p99 "
          "(client) | same, server time p50 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in (("rerankd (cache on, default)", cached), ("rerankd --no-cache", uncached)):
        print(f"| {name} | {r['pairs_per_s']:.1f} | {r['cache_hit_fraction']:.0%} | {r['latency_p50_s']:.2f} s | "
              f"{r['latency_p95_s']:.2f} s | {r['repeat_request_p50_ms']:.1f} / {r['repeat_request_p99_ms']:.1f} ms | "
              f"{r['repeat_request_server_p50_ms']:.1f} ms |")
    print(f"speed-up from the cache: {result['speedup']:.2f}x (wrote {out.relative_to(HERE.parent)})")


if __name__ == "__main__":
    main()
