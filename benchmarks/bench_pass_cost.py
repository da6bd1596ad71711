"""What one forward pass costs on this CPU beyond its tokens: the basis of CPU_PASS_TOKENS (engine/scoring.py).

    python benchmarks/bench_pass_cost.py            # mini shape (built into benchmarks/.models/mini if missing)

Times the best of 7 forward passes for each batch shape (rows x width, no padding) and fits
seconds = fixed + per_token x tokens through the one-row shapes; prints the fixed cost in ms and in tokens.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPES = [(1, 8), (1, 16), (1, 32), (2, 32), (1, 64), (4, 64), (1, 128), (2, 128), (4, 128), (1, 256), (4, 256),
          (8, 256), (1, 512), (2, 512), (4, 512)]


def main() -> None:
    from rerankd import Reranker
    from rerankd.testing import make_test_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="mini")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    path = HERE / ".models" / args.shape
    if not (path / "config.json").exists():
        make_test_model(path, shape=args.shape, seed=0)
    backend = Reranker(str(path), device="cpu").scorer.backend
    one_row: list[tuple[int, float]] = []
    for rows, width in SHAPES:
        batch = {"input_ids": np.full((rows, width), 5, dtype=np.int64),
                 "attention_mask": np.ones((rows, width), dtype=np.int64)}
        backend.forward(batch)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            backend.forward(batch)
            times.append(time.perf_counter() - started)
        best = min(times)
        if rows == 1:
            one_row.append((width, best))
        print(f"{rows}x{width}: {best * 1000:.1f} ms, {rows * width / best:.0f} tokens/s", flush=True)
    per_token, fixed = np.polyfit([w for w, _ in one_row], [t for _, t in one_row], 1)
    print(f"fixed cost of a pass: {fixed * 1000:.1f} ms = {fixed / per_token:.0f} tokens at {1 / per_token:.0f} tokens/s")


if __name__ == "__main__":
    main()
