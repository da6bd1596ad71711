"""What the INT8 quality gate measures and costs at load time (`--dtype int8` on CPU), per fixture shape.

    python benchmarks/bench_int8_gate.py --shapes tiny mini base

Loads each shape's fixture in fp32 and with `--dtype int8` (torch dynamic
quantisation, which runs the gate) and prints the gate's Spearman and the extra
load time. Writes benchmarks/results/int8-gate.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from bench_batching import model_dir

from rerankd import Settings
from rerankd.model import load_model

HERE = Path(__file__).resolve().parent


class _GateReport(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "mini", "base"])
    args = parser.parse_args()
    report = _GateReport()
    gate_log = logging.getLogger("rerankd.model.quality")
    gate_log.addHandler(report)
    gate_log.setLevel(logging.INFO)
    rows = []
    for shape in args.shapes:
        seconds = {}
        for dtype in ("fp32", "int8"):
            started = time.perf_counter()
            load_model(Settings(model=str(model_dir(shape)), device="cpu", dtype=dtype))
            seconds[dtype] = time.perf_counter() - started
        row = {"shape": shape, "gate": report.messages[-1], "load_s_fp32": round(seconds["fp32"], 2),
               "load_s_int8_with_gate": round(seconds["int8"], 2)}
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    out = HERE / "results" / "int8-gate.json"
    out.write_text(json.dumps({"command": "python benchmarks/bench_int8_gate.py --shapes " + " ".join(args.shapes),
                               "rows": rows}, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
