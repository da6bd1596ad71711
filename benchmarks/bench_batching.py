"""Offline throughput: rerankd's length-sorted token-budget batches vs. the naive loop.

The naive approach is what most reranking scripts do: batches of 32 pairs in
input order, each padded to its longest pair, truncated at 512 tokens. Both
run in the same process on the same model and the same pairs, and their
scores are compared so the speed-up can't come from doing different work.

    python benchmarks/bench_batching.py --shape mini --docs 256 --repeats 3

Writes benchmarks/results/batching-<shape>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from workload import QUERY, mixed_documents

import rerankd
from rerankd import Reranker
from rerankd.testing import make_test_model

HERE = Path(__file__).resolve().parent


def model_dir(shape: str) -> Path:
    path = HERE / ".models" / shape
    if not (path / "config.json").exists():
        make_test_model(path, shape=shape, seed=0)
    return path


def naive_scores(tokenizer, model, pairs: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            inputs = tokenizer(
                [q for q, _ in chunk],
                [d for _, d in chunk],
                padding=True,
                truncation="only_second",
                max_length=512,
                return_tensors="pt",
            )
            out.append(model(**inputs).logits.float().reshape(-1).numpy())
    return np.concatenate(out)


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mini", choices=["tiny", "mini", "base", "m3"])
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budgets", default="4096,8192,16384,32768", help="token budgets to try")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_dir(args.shape)
    docs = mixed_documents(args.docs)
    pairs = [(QUERY, d) for d in docs]

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    naive_s, naive_logits = timed(lambda: naive_scores(tokenizer, model, pairs), args.repeats)
    lengths = [len(ids) for ids in tokenizer([QUERY] * len(docs), docs, truncation="only_second", max_length=512)[
        "input_ids"
    ]]
    naive_tokens = sum(len(lengths[i : i + 32]) * max(lengths[i : i + 32]) for i in range(0, len(lengths), 32))

    rows = []
    for budget in [int(b) for b in args.budgets.split(",")]:
        reranker = Reranker(str(path), device="cpu", max_batch_tokens=budget, threads=args.threads)
        ours_s, report = timed(lambda r=reranker: r.score(pairs), args.repeats)
        diff = float(np.max(np.abs(report.logits - naive_logits)))
        rows.append(
            {
                "max_batch_tokens": budget,
                "seconds": ours_s,
                "pairs_per_s": len(pairs) / ours_s,
                "speedup": naive_s / ours_s,
                "batches": report.batches,
                "padded_tokens": report.padded_tokens,
                "real_tokens": sum(report.num_tokens),
                "max_abs_logit_diff_vs_naive": diff,
            }
        )
    result = {
        "shape": args.shape,
        "docs": len(pairs),
        "threads": torch.get_num_threads(),
        "naive": {"seconds": naive_s, "pairs_per_s": len(pairs) / naive_s, "padded_tokens": naive_tokens},
        "rerankd": rows,
        "machine": {"cpu": _cpu_name(), "cores": torch.get_num_threads(), "python": platform.python_version()},
        "versions": {"rerankd": rerankd.__version__, "torch": torch.__version__},
        "command": f"python benchmarks/bench_batching.py --shape {args.shape} --docs {args.docs} "
        f"--repeats {args.repeats} --budgets {args.budgets}" + (f" --threads {args.threads}" if args.threads else ""),
    }
    out = HERE / "results" / f"batching-{args.shape}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"shape {args.shape}, {len(pairs)} pairs, torch threads {result['threads']}, cpu {result['machine']['cpu']}")
    print("| method | token budget | pairs/s | speed-up | batches | padded tokens | max logit diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| naive (32 in input order, pad to longest) | - | {len(pairs) / naive_s:.1f} | 1.00x | "
          f"{-(-len(pairs) // 32)} | {naive_tokens} | - |")
    for r in rows:
        print(f"| rerankd (length-sorted) | {r['max_batch_tokens']} | {r['pairs_per_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['batches']} | {r['padded_tokens']} | {r['max_abs_logit_diff_vs_naive']:.1e} |")
    print(f"(real tokens: {rows[0]['real_tokens']}; wrote {out.relative_to(HERE.parent)})")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
