"""Offline throughput and ranking quality of every CPU backend on the same pairs (issue 5).

    python benchmarks/bench_backends.py --shape mini --docs 128 --repeats 3
    python benchmarks/bench_backends.py --shape base --docs 64 --repeats 2

Backends: torch fp32, torch dynamic INT8, and ONNX Runtime on `rerankd export`s
made fresh by this script (fp32; fused with --optimize; INT8; fused + INT8). All
run through rerankd's engine, so they get the same length-sorted token-budget
batches; only the backend differs. Quality is the Spearman rank correlation of
each backend's logits with torch fp32's on the benchmark pairs, and the largest
logit difference. Writes benchmarks/results/backends-<shape>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from bench_batching import _cpu_name, model_dir
from workload import QUERY, mixed_documents

from rerankd import Reranker, Settings
from rerankd.export import export_onnx
from rerankd.model.quality import spearman

HERE = Path(__file__).resolve().parent
# name, backend, dtype, export options (None: the torch model directory itself)
VARIANTS = (
    ("torch fp32", "torch", "fp32", None),
    ("torch int8 (dynamic)", "torch", "int8", None),
    ("onnx fp32", "onnx", "auto", {}),
    ("onnx fp32 --optimize 1", "onnx", "auto", {"optimize": 1}),
    ("onnx fp32 --optimize 2", "onnx", "auto", {"optimize": 2}),
    ("onnx int8", "onnx", "auto", {"quantize": "int8"}),
    ("onnx int8 --optimize 2", "onnx", "auto", {"optimize": 2, "quantize": "int8"}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mini", choices=["tiny", "mini", "base"])
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = model_dir(args.shape)
    pairs = [(QUERY, d) for d in mixed_documents(args.docs)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as exports:
        for index, (name, backend, dtype, export) in enumerate(VARIANTS):
            directory = path
            if export is not None:
                directory = Path(exports) / str(index)
                export_onnx(Settings(model=str(path)), directory, force=True, **export)
            reranker = Reranker(str(directory), device="cpu", backend=backend, dtype=dtype)
            reranker.score(pairs[:16])  # warm-up
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                report = reranker.score(pairs)
                times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            rows.append({"backend": name, "seconds": seconds, "pairs_per_s": len(pairs) / seconds,
                         "logits": report.logits})
            print(f"{name}: {len(pairs) / seconds:.1f} pairs/s", flush=True)
            del reranker
    reference = rows[0]["logits"]
    for row in rows:
        logits = row.pop("logits")
        row["spearman_vs_torch_fp32"] = spearman(reference, logits)
        row["max_abs_logit_diff"] = float(np.max(np.abs(reference - logits)))
        row["speedup"] = row["pairs_per_s"] / rows[0]["pairs_per_s"]
    command = f"python benchmarks/bench_backends.py --shape {args.shape} --docs {args.docs} --repeats {args.repeats}"
    result = {"shape": args.shape, "docs": len(pairs), "threads": torch.get_num_threads(), "cpu": _cpu_name(),
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "rows": rows, "command": command}
    out = HERE / "results" / f"backends-{args.shape}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"shape {args.shape}, {len(pairs)} pairs, {result['threads']} threads, {result['cpu']}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print("| backend | pairs/s | vs torch fp32 | Spearman vs torch fp32 | max abs logit diff |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['backend']} | {row['pairs_per_s']:.1f} | {row['speedup']:.2f}x | "
              f"{row['spearman_vs_torch_fp32']:.4f} | {row['max_abs_logit_diff']:.1e} |")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
