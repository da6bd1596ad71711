"""Offline throughput of the backends on the same pairs: torch fp32 vs ONNX Runtime fp32 (first step of issue 5).

    python benchmarks/bench_backends.py --shape mini --docs 128 --repeats 3

Both run through rerankd's engine (same length-sorted token-budget batches);
only the backend differs. Writes benchmarks/results/backends-<shape>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_batching import _cpu_name, model_dir
from workload import QUERY, mixed_documents

from rerankd import Reranker, Settings
from rerankd.model.export import export_onnx

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mini", choices=["tiny", "mini", "base"])
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = model_dir(args.shape)
    onnx_dir = HERE / ".models" / f"{args.shape}-onnx"
    if not (onnx_dir / "model.onnx").exists():
        export_onnx(Settings(model=str(path)), onnx_dir)
    pairs = [(QUERY, d) for d in mixed_documents(args.docs)]
    rows, logits = [], {}
    for name, directory, backend in (("torch fp32", path, "torch"), ("onnx fp32", onnx_dir, "onnx")):
        reranker = Reranker(str(directory), device="cpu", backend=backend)
        reranker.score(pairs[:16])  # warm-up
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            report = reranker.score(pairs)
            times.append(time.perf_counter() - started)
        logits[name] = report.logits
        seconds = statistics.median(times)
        rows.append({"backend": name, "seconds": seconds, "pairs_per_s": len(pairs) / seconds})
    diff = float(np.max(np.abs(logits["torch fp32"] - logits["onnx fp32"])))
    command = f"python benchmarks/bench_backends.py --shape {args.shape} --docs {args.docs} --repeats {args.repeats}"
    result = {"shape": args.shape, "docs": len(pairs), "threads": torch.get_num_threads(), "cpu": _cpu_name(),
              "rows": rows, "max_abs_logit_diff": diff, "command": command}
    out = HERE / "results" / f"backends-{args.shape}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"shape {args.shape}, {len(pairs)} pairs, {result['threads']} threads, {result['cpu']}")
    print("| backend | pairs/s | vs torch |")
    print("| --- | --- | --- |")
    for row in rows:
        print(f"| {row['backend']} | {row['pairs_per_s']:.1f} | {row['pairs_per_s'] / rows[0]['pairs_per_s']:.2f}x |")
    print(f"max |logit diff| onnx vs torch: {diff:.1e} (wrote {out.relative_to(HERE.parent)})")


if __name__ == "__main__":
    main()
