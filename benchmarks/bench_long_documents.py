"""Long documents four ways: truncated at 512, chunked at 512, one pass at 8192, chunked at 1024.

Attention costs the square of the length, the rest of the model grows linearly, so at some length several
short windows cost less than one long pass over the same tokens. This measures where, per shape, on
documents of 1k, 2k, 4k and 8k tokens: CPU time (and wall time), peak memory (the process's resident set above where it
started the call) and the tokens the model processed. Ways and lengths are interleaved within each repeat,
so a neighbour's load falls on all of them alike; the repeat that took the least CPU time is kept.

Scores can't say which way ranks better here (random weights); docs/api.md says how to find out on
one's own data.

    python benchmarks/bench_long_documents.py --shape mini --repeats 2
    python benchmarks/bench_long_documents.py --shape m3 --lengths 8192 --repeats 1

Writes benchmarks/results/long-documents-<shape>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import threading
import time
from pathlib import Path

import torch
from workload import QUERY, _words

import rerankd
from rerankd import Reranker
from rerankd.engine.chunking import ChunkPolicy, chunk_pairs
from rerankd.testing import make_test_model

HERE = Path(__file__).resolve().parent
POSITIONS = 8194  # bge-reranker-v2-m3's
PAGE = os.sysconf("SC_PAGE_SIZE")
LIBC = ctypes.CDLL("libc.so.6")


def model_dir(shape: str) -> Path:
    path = HERE / ".models" / f"{shape}-{POSITIONS}"
    if not (path / "config.json").exists():
        make_test_model(path, shape=shape, seed=0, max_positions=POSITIONS)
    return path


def document(reranker: Reranker, tokens: int) -> str:
    """English corpus text cut at a word so it has `tokens` tokens, give or take the last word."""
    words = _words()
    text = " ".join(words[i % len(words)] for i in range(tokens * 2))
    [head] = reranker.encoder.head_tokens([text], [tokens])
    return text[: head.offsets[-1][1]]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """The highest resident set seen while the block runs, sampled every millisecond."""

    def __enter__(self) -> PeakMemory:
        LIBC.malloc_trim(0)  # hand back what earlier runs freed, so the peak above the start is this run's
        self.start = self.peak = rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def above_start_mib(self) -> float:
        return (self.peak - self.start) / 2**20


WAYS = {
    "truncate 512": ("truncate", 512),
    "chunk 512": ("chunk", 512),
    "one pass 8192": ("truncate", 8192),
    "chunk 1024": ("chunk", 1024),
}


def run_way(reranker: Reranker, doc: str, way: str) -> dict:
    mode, length = WAYS[way]
    cpu_started = time.process_time()
    started = time.perf_counter()
    with PeakMemory() as memory:
        if mode == "chunk":
            [chunked] = chunk_pairs(reranker.encoder, [(QUERY, doc)], ChunkPolicy(max_chunks=1000), length)
            pairs = [w.pair for w in chunked.windows]
        else:
            pairs = reranker.encoder.encode_pairs([(QUERY, doc)], length)
        tokenized = time.perf_counter()
        logits, stats = reranker.scorer.score(pairs)
    done = time.perf_counter()
    # CPU seconds of this process (all its threads): on a shared machine, where wall time is mostly waiting
    # for a core, this is the figure that compares the ways.
    return {"cpu_seconds": time.process_time() - cpu_started, "seconds": done - started, "tokenize_seconds": tokenized - started,
            "peak_mib": memory.above_start_mib, "pairs": len(pairs),
            "tokens": sum(p.num_tokens for p in pairs), "padded_tokens": stats.padded_tokens,
            # What attention pays for: the square of each input's length, summed; machine-independent.
            "attention_mtoken_pairs": sum(p.num_tokens ** 2 for p in pairs) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="mini", choices=["tiny", "mini", "base", "m3"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    reranker = Reranker(str(model_dir(args.shape)), device="cpu", dtype="fp32", max_length=8192)
    documents = {n: document(reranker, n) for n in args.lengths}
    run_way(reranker, documents[args.lengths[0]], "truncate 512")  # warm-up: allocation and kernel choice
    best: dict[tuple[int, str], dict] = {}
    for _ in range(args.repeats):
        for n in args.lengths:
            for way in WAYS:
                result = run_way(reranker, documents[n], way)
                key = (n, way)
                if key not in best or result["cpu_seconds"] < best[key]["cpu_seconds"]:
                    best[key] = result

    rows = [{"document_tokens": n, "way": way, **best[(n, way)]} for n in args.lengths for way in WAYS]
    crossover = next((n for n in args.lengths
                      if best[(n, "chunk 512")]["cpu_seconds"] < best[(n, "one pass 8192")]["cpu_seconds"]), None)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_average": os.getloadavg(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = {"shape": args.shape, "max_positions": POSITIONS, "repeats": args.repeats, "rerankd": rerankd.__version__,
           "command": f"python benchmarks/bench_long_documents.py --shape {args.shape} --lengths "
                      f"{' '.join(map(str, args.lengths))} --repeats {args.repeats}",
           "machine": machine, "chunk_512_beats_one_pass_from": crossover, "rows": rows}
    path = HERE / "results" / f"long-documents-{args.shape}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")

    print("| document tokens | way | CPU s | x one pass | wall s | peak MiB | pairs | tokens | attention (M token pairs) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        one_pass = best[(row["document_tokens"], "one pass 8192")]["cpu_seconds"]
        print(f"| {row['document_tokens']} | {row['way']} | {row['cpu_seconds']:.2f} | {row['cpu_seconds'] / one_pass:.2f} | "
              f"{row['seconds']:.2f} | {row['peak_mib']:.0f} | {row['pairs']} | {row['tokens']} | "
              f"{row['attention_mtoken_pairs']:.1f} |")
    print(f"\nchunked at 512 is faster than one pass from {crossover} document tokens" if crossover
          else "\nchunked at 512 was never faster than one pass at these lengths")
    print(f"load average at the end: {os.getloadavg()}; written to {path}")


if __name__ == "__main__":
    main()
