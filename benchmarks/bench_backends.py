"""Throughput and ranking quality of every CPU backend on the same pairs, offline and through the server
(issues 5 and 17).

    python benchmarks/bench_backends.py --shape mini --docs 96 --repeats 3
    python benchmarks/bench_backends.py --shape base --docs 32 --repeats 2 \\
        --variants torch-fp32,onnx-fp32,openvino-fp32,torch-int8,onnx-int8,openvino-int8
    python benchmarks/bench_backends.py --shape mini --docs 32 --repeats 2 --server-requests 1 --clients 1 \\
        --variants torch-fp32,onnx-fp32,openvino-fp32,onnx-int8,openvino-int8 --out results/backends-openvino-mini.json

Backends: torch fp32, torch dynamic INT8, ONNX Runtime and OpenVINO on `rerankd
export`s made fresh by this script (ONNX fp32, fused, INT8; OpenVINO fp32 and NNCF
INT8). All run through rerankd's engine, so they get the same length-sorted
token-budget batches; only the backend differs. The variants are interleaved:
each repeat times every variant once, in turn, so a busy neighbour on a shared
machine slows all of them alike; the median per variant is reported. Quality is
the Spearman rank correlation of each backend's logits with torch fp32's on the
benchmark pairs, and the largest logit difference.

With --server-requests N, each variant is also served by its own `rerankd serve`
(all started up front, idle while another one is measured), and each repeat sends
N requests of 32 mixed-length documents from --clients closed-loop clients to each
server in turn (the score cache off). Writes benchmarks/results/backends-<shape>.json, or --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import openvino
import torch
from bench_batching import _cpu_name, model_dir
from bench_server import Servers, _free_port, _wait_for
from workload import QUERY, mixed_documents

from rerankd import Reranker, Settings
from rerankd.bench import closed_loop, rerank_body
from rerankd.bench.summary import latency_stats
from rerankd.export import export_onnx, export_openvino
from rerankd.model.quality import spearman

HERE = Path(__file__).resolve().parent
DOCS_PER_REQUEST = 32
# key: (label, backend, dtype, export function and options; None: the torch model directory itself)
VARIANTS = {
    "torch-fp32": ("torch fp32", "torch", "fp32", None),
    "torch-int8": ("torch int8 (dynamic)", "torch", "int8", None),
    "onnx-fp32": ("onnx fp32", "onnx", "auto", (export_onnx, {})),
    "onnx-fp32-o1": ("onnx fp32 --optimize 1", "onnx", "auto", (export_onnx, {"optimize": 1})),
    "onnx-fp32-o2": ("onnx fp32 --optimize 2", "onnx", "auto", (export_onnx, {"optimize": 2})),
    "onnx-int8": ("onnx int8", "onnx", "auto", (export_onnx, {"quantize": "int8"})),
    "onnx-int8-o2": ("onnx int8 --optimize 2", "onnx", "auto", (export_onnx, {"optimize": 2, "quantize": "int8"})),
    "openvino-fp32": ("openvino fp32", "openvino", "auto", (export_openvino, {})),
    "openvino-int8": ("openvino int8 (NNCF)", "openvino", "auto", (export_openvino, {"quantize": "int8"})),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mini", choices=["tiny", "mini", "base"])
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, the first is the reference")
    parser.add_argument("--server-requests", type=int, default=0, help="requests per server per repeat (0: none)")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop clients per server")
    parser.add_argument("--out", type=Path, default=None, help="results file, relative to benchmarks/ (default: results/backends-<shape>.json)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every core)")
    parser.add_argument("--exports", type=Path, default=None,
                        help="keep the exports here (relative to benchmarks/) and reuse them in later runs (default: a temporary "
                             "directory)")
    args = parser.parse_args()
    keys = args.variants.split(",")
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    path = model_dir(args.shape)
    pairs = [(QUERY, d) for d in mixed_documents(args.docs)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as temporary:
        exports = HERE / (args.exports or temporary)  # absolute: the servers run from the repository root
        directories = {}
        for key in keys:
            export = VARIANTS[key][3]
            directories[key] = path
            if export is not None:
                directories[key] = exports / key
                export_function, options = export
                if not (directories[key] / "config.json").is_file():
                    export_function(Settings(model=str(path)), directories[key], force=True, **options)
        rows = offline(keys, directories, pairs, args.repeats, args.threads)
        served = serve(keys, directories, args) if args.server_requests else {}
    load_after = os.getloadavg()
    for key, row in rows.items():
        row.update(served.get(key, {}))
    command = "python benchmarks/bench_backends.py " + shlex.join(sys.argv[1:])
    result = {"shape": args.shape, "docs": len(pairs), "threads": args.threads or torch.get_num_threads(), "cpu": _cpu_name(),
              "load_average_before": load_before, "load_average_after": load_after,
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
              "openvino": openvino.__version__, "rows": list(rows.values()), "command": command}
    out = HERE / (args.out or Path("results") / f"backends-{args.shape}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"shape {args.shape}, {len(pairs)} pairs, {result['threads']} threads, {result['cpu']}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"| backend | pairs/s | vs {rows[keys[0]]['backend']} | Spearman vs it | max abs logit diff"
          + (" | server pairs/s | server vs it | server p50 s | server p95 s |" if served else " |"))
    print("| --- | --- | --- | --- | ---" + (" | --- | --- | --- | --- |" if served else " |"))
    for row in rows.values():
        line = (f"| {row['backend']} | {row['pairs_per_s']:.1f} | {row['speedup']:.2f}x | "
                f"{row['spearman_vs_reference']:.4f} | {row['max_abs_logit_diff']:.1e} |")
        if served:
            line += (f" {row['server_pairs_per_s']:.1f} | {row['server_speedup']:.2f}x | "
                     f"{row['server_latency']['p50']:.2f} | {row['server_latency']['p95']:.2f} |")
        print(line)
    print(f"wrote {out.relative_to(HERE.parent)}")


def offline(keys: list[str], directories: dict[str, Path], pairs: list[tuple[str, str]], repeats: int,
            threads: int | None) -> dict[str, dict]:
    rerankers = {}
    for key in keys:
        _, backend, dtype, _ = VARIANTS[key]
        rerankers[key] = Reranker(str(directories[key]), device="cpu", backend=backend, dtype=dtype, threads=threads)
        rerankers[key].score(pairs[:16])  # warm-up
    times: dict[str, list[float]] = {key: [] for key in keys}
    logits = {}
    for _ in range(repeats):
        for key in keys:
            started = time.perf_counter()
            logits[key] = rerankers[key].score(pairs).logits
            times[key].append(time.perf_counter() - started)
        print(f"offline round: {', '.join(f'{k} {len(pairs) / times[k][-1]:.1f}' for k in keys)} pairs/s", flush=True)
    reference = logits[keys[0]]
    rows = {}
    for key in keys:
        seconds = statistics.median(times[key])
        rows[key] = {"backend": VARIANTS[key][0], "seconds": seconds, "pairs_per_s": len(pairs) / seconds,
                     "spearman_vs_reference": spearman(reference, logits[key]),
                     "max_abs_logit_diff": float(np.max(np.abs(reference - logits[key])))}
    for row in rows.values():
        row["speedup"] = row["pairs_per_s"] / rows[keys[0]]["pairs_per_s"]
    return rows


def serve(keys: list[str], directories: dict[str, Path], args: argparse.Namespace) -> dict[str, dict]:
    docs = mixed_documents(args.server_requests * DOCS_PER_REQUEST, seed=1)
    bodies = [rerank_body(QUERY, docs[i * DOCS_PER_REQUEST:(i + 1) * DOCS_PER_REQUEST])
              for i in range(args.server_requests)]
    env = {**os.environ, "RERANKD_NO_CACHE": "1", "PYTHONPATH": str(HERE.parent / "src")}
    servers = Servers(Path(tempfile.mkdtemp(prefix="bench-backends-logs-")))
    urls = {}
    try:
        for key in keys:
            _, backend, dtype, _ = VARIANTS[key]
            port = _free_port()
            cmd = [sys.executable, "-m", "rerankd.cli.main", "serve", "--model", str(directories[key]), "--port",
                   str(port), "--device", "cpu", "--backend", backend, "--dtype", dtype]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            proc, log = servers.start(key, cmd, env)
            _wait_for(f"http://127.0.0.1:{port}/ready", proc, log, deadline_s=600)
            urls[key] = f"http://127.0.0.1:{port}/v1/rerank"
            asyncio.run(closed_loop(urls[key], bodies[:2], 2))  # warm-up
        walls: dict[str, list[float]] = {key: [] for key in keys}
        latencies: dict[str, list[float]] = {key: [] for key in keys}
        for _ in range(args.repeats):
            for key in keys:
                phase = asyncio.run(closed_loop(urls[key], bodies, args.clients))
                failed = [o for o in phase.outcomes if o.status != 200]
                if failed:
                    raise SystemExit(f"{key}: {len(failed)} requests failed, e.g. {failed[0].status} {failed[0].error}")
                walls[key].append(phase.wall_seconds)
                latencies[key] += [o.latency for o in phase.outcomes]
            print(f"server round: {', '.join(f'{k} {len(bodies) * DOCS_PER_REQUEST / walls[k][-1]:.1f}' for k in keys)}"
                  " pairs/s", flush=True)
    finally:
        servers.stop_all()
    pairs = len(bodies) * DOCS_PER_REQUEST
    rows = {key: {"server_pairs_per_s": pairs / statistics.median(walls[key]),
                  "server_latency": latency_stats(latencies[key])} for key in keys}
    for row in rows.values():
        row["server_speedup"] = row["server_pairs_per_s"] / rows[keys[0]]["server_pairs_per_s"]
    return rows


if __name__ == "__main__":
    main()
