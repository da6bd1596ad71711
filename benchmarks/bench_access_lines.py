"""Cost of one access line (`ServingMiddleware._log_access`) in text and JSON; the lines go to stderr.

    python benchmarks/bench_access_lines.py 2>/tmp/access-lines.txt

Prints microseconds per line, best of 3 x 20,000 calls, two passes of each format.
"""

from __future__ import annotations

import sys
import timeit

from rerankd.logs import configure_server_output
from rerankd.server.middleware import ServingMiddleware

CALLS = 20_000
SCOPE = {"method": "POST", "path": "/v1/rerank"}
FIELDS = {"model": "m", "documents": 32, "tokens": 9000, "truncated": 0, "cache_hits": 0,
          "tokenize_ms": 1.0, "queue_ms": 2.0, "inference_ms": 3.0}


def main() -> None:
    middleware = ServingMiddleware.__new__(ServingMiddleware)  # only its access-line method is timed
    for json_lines in (False, True, False, True):
        configure_server_output(json_lines=json_lines, access=True)
        middleware.json_logs = json_lines
        best = min(timeit.repeat(lambda: middleware._log_access(SCOPE, "id", "/v1/rerank", 200, 0.0123, FIELDS),
                                 number=CALLS, repeat=3))
        print(f"{'json' if json_lines else 'text'}: {best / CALLS * 1e6:.1f} us per access line", file=sys.__stdout__)


if __name__ == "__main__":
    main()
