"""Prove `rerankd export` on the bge-reranker-v2-m3 shape (568M parameters, 2.27 GB in fp32): not run in CI.

    python benchmarks/bench_export_m3.py            # fp32 export (external data) + INT8 export
    python benchmarks/bench_export_m3.py --skip-int8

The fp32 graph is over protobuf's 2 GB limit, so the export must keep its weights
in an external-data file. This script builds the random-weight m3 fixture (once,
in benchmarks/.models/m3), exports it, lets the export check its own parity
against torch, then loads the export in a fresh process and scores a few pairs.
Needs about 10 GB of RAM. Writes benchmarks/results/export-m3.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_SERVE_CHECK = """
import sys, time
from rerankd import Reranker
started = time.perf_counter()
reranker = Reranker(sys.argv[1], backend="onnx")
loaded = time.perf_counter() - started
print(loaded, *reranker.compute_score([("what do pandas eat?", "Bamboo."), ("what do pandas eat?", "Cars.")]))
"""


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-int8", action="store_true")
    args = parser.parse_args()

    from rerankd import Settings
    from rerankd.export import export_onnx
    from rerankd.testing import make_test_model

    model = HERE / ".models" / "m3"
    if not (model / "model.safetensors").exists():
        started = time.perf_counter()
        make_test_model(model, shape="m3")
        print(f"built the m3 fixture in {time.perf_counter() - started:.0f} s", flush=True)
    runs = [("fp32", {})] + ([] if args.skip_int8 else [("int8", {"quantize": "int8"})])
    rows = []
    with tempfile.TemporaryDirectory(prefix="export-m3-") as tmp:
        for name, options in runs:
            out = Path(tmp) / name
            started = time.perf_counter()
            report = export_onnx(Settings(model=str(model)), out, **options)
            seconds = time.perf_counter() - started
            files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if "onnx" in p.name}
            check = subprocess.run([sys.executable, "-c", _SERVE_CHECK, str(out)], capture_output=True, text=True,
                                   check=True).stdout.split()
            row = {"export": name, "seconds": round(seconds, 1), "files": files,
                   "max_abs_logit_diff": report.info.max_abs_logit_diff, "spearman": report.info.spearman,
                   "load_seconds": round(float(check[0]), 1), "scores": [float(x) for x in check[1:]],
                   "peak_rss_gb_so_far": round(_peak_rss_gb(), 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"command": "python benchmarks/bench_export_m3.py" + (" --skip-int8" if args.skip_int8 else ""),
              "rows": rows}
    out_file = HERE / "results" / "export-m3.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_file.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
