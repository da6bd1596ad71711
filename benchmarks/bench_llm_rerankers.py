"""LLM rerankers on the CPU: pairs/s of a Qwen3-Reranker-shaped model next to the m3 cross-encoder shape, and
prefix reuse on and off, offline and through the server (issue 15).

    python benchmarks/bench_llm_rerankers.py --shape qwen3-0.6b --docs 32 --repeats 2
    python benchmarks/bench_llm_rerankers.py --shape tiny --docs 32 --repeats 3 --compare-shape tiny

One query against `--docs` mixed-length documents (benchmarks/workload.py), scored by rerankd's engine at
`--max-length` 512, so both models see the same text cut at the same length. Offline, the variants run
interleaved, repeat by repeat, so a busy machine slows all of them alike; the median is reported. Through the
server, one `rerankd serve` per prefix-reuse setting, cache off, sequential requests. Writes
benchmarks/results/llm-rerankers-<shape>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from bench_batching import _cpu_name
from workload import QUERY, mixed_documents

from rerankd import Reranker
from rerankd.engine import plan_batches
from rerankd.model.causal_backend import MIN_PREFIX_TOKENS, common_prefix_length
from rerankd.testing import make_causal_test_model, make_test_model

HERE = Path(__file__).resolve().parent


def fixture(shape: str, arch: str) -> Path:
    path = HERE / ".models" / f"{arch}-{shape}"
    if not (path / "config.json").exists():
        if arch in ("qwen3", "gemma"):
            make_causal_test_model(path, shape=shape, arch=arch)
        else:
            make_test_model(path, shape=shape, arch=arch)
    return path


def offline(variants: dict[str, tuple[Reranker, bool]], documents: list[str], repeats: int) -> dict[str, dict]:
    """`variants`: name -> (reranker, prefix reuse); the two Qwen3 variants share one model."""
    for reranker, _ in variants.values():
        reranker.score_query(QUERY, documents[:4])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}  # this process's CPU time: less load-dependent
    reports = {}
    for _ in range(repeats):
        for name, (reranker, reuse) in variants.items():
            if hasattr(reranker.scorer.backend, "prefix_reuse"):
                reranker.scorer.backend.prefix_reuse = reuse
            started, cpu_started = time.perf_counter(), time.process_time()
            reports[name] = reranker.score_query(QUERY, documents)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            print(f"  {name}: {times[name][-1]:.2f} s, {cpu[name][-1]:.2f} CPU s", flush=True)
    return {name: {"seconds": statistics.median(t), "pairs_per_s": len(documents) / statistics.median(t),
                   "tokens": sum(reports[name].num_tokens), "padded_tokens": reports[name].padded_tokens,
                   "batches": reports[name].batches, "runs": t, "cpu_seconds": statistics.median(cpu[name]),
                   "cpu_runs": cpu[name], "logits": reports[name].logits}
            for name, t in times.items()}


def model_tokens(reranker: Reranker, documents: list[str], reuse: bool) -> int:
    """Tokens the model computes for one query's documents: each batch's rows x width, less the shared prefix
    computed once instead of once per row when `reuse`. The planner and prefix rule are the engine's."""
    scorer = reranker.scorer
    pairs = reranker.encoder.encode(QUERY, documents)
    total = 0
    for batch in plan_batches([p.num_tokens for p in pairs], scorer.max_batch_tokens, scorer.max_batch_size):
        rows = [np.array(pairs[i].input_ids) for i in batch]
        width = max(len(r) for r in rows)
        prefix = common_prefix_length(rows) if reuse and len(rows) > 1 else 0
        prefix = prefix if prefix >= MIN_PREFIX_TOKENS else 0
        total += prefix + len(rows) * (width - prefix)
    return total


def through_server(model: Path, documents: list[str], requests: int, max_length: int, extra: list[str]) -> dict:
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "RERANKD_NO_CACHE": "1"}
    command = [sys.executable, "-m", "rerankd.cli.main", "serve", "--model", str(model), "--port", str(port),
               "--device", "cpu", "--max-length", str(max_length), *extra]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900) as client:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(1)
            else:
                raise RuntimeError("the server did not become ready")
            body = {"query": QUERY, "documents": documents}
            client.post("/rerank", json={"query": QUERY, "documents": documents[:4]}).raise_for_status()
            seconds = []
            for _ in range(requests):
                started = time.perf_counter()
                client.post("/rerank", json=body).raise_for_status()
                seconds.append(time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"seconds": statistics.median(seconds), "pairs_per_s": len(documents) / statistics.median(seconds),
            "runs": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen3-0.6b", help="qwen3 fixture shape: tiny, mini or qwen3-0.6b")
    parser.add_argument("--compare-shape", default="m3", help="cross-encoder fixture shape to compare with")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--server-requests", type=int, default=2, help="0 skips the server runs")
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    documents = mixed_documents(args.docs)
    qwen3, cross = fixture(args.shape, "qwen3"), fixture(args.compare_shape, "xlm-roberta")
    llm = Reranker(str(qwen3), device="cpu", max_length=args.max_length)
    variants = {
        f"{args.compare_shape} cross-encoder": (Reranker(str(cross), device="cpu", max_length=args.max_length), False),
        f"qwen3 {args.shape}, prefix reuse": (llm, True),
        f"qwen3 {args.shape}, no prefix reuse": (llm, False),
    }
    load = os.getloadavg()
    rows = offline(variants, documents, args.repeats)
    names = list(variants)
    reused, whole = (rows[name].pop("logits") for name in names[1:])
    rows[names[0]].pop("logits")
    result = {
        "command": "python benchmarks/bench_llm_rerankers.py " + " ".join(sys.argv[1:]),
        "cpu": _cpu_name(), "threads": torch.get_num_threads(), "loadavg_before": load, "loadavg_after":
        os.getloadavg(), "docs": args.docs, "max_length": args.max_length, "offline": rows,
        "prefix_reuse_speedup": rows[names[2]]["seconds"] / rows[names[1]]["seconds"],
        "prefix_reuse_cpu_time_ratio": rows[names[2]]["cpu_seconds"] / rows[names[1]]["cpu_seconds"],
        "prefix_reuse_max_abs_logit_diff": float(abs(reused - whole).max()),
        "model_tokens": {"prefix reuse": model_tokens(llm, documents, True),
                         "no prefix reuse": model_tokens(llm, documents, False)},
    }
    del variants, llm
    if args.server_requests:
        result["server"] = {
            "prefix reuse": through_server(qwen3, documents, args.server_requests, args.max_length, []),
            "no prefix reuse": through_server(qwen3, documents, args.server_requests, args.max_length,
                                              ["--no-prefix-reuse"]),
        }
        result["server_loadavg_after"] = os.getloadavg()
    out = HERE / "results" / f"llm-rerankers-{args.shape}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "offline"} | {
        "offline": {k: round(v["pairs_per_s"], 2) for k, v in rows.items()}}, indent=2))


if __name__ == "__main__":
    main()
