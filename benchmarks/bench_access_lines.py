"""Cost of one access line: ServingMiddleware._log_access in text and JSON, lines to stderr (redirect it to a file).

    python benchmarks/bench_access_lines.py 2>/tmp/access-lines.txt
"""
import sys, time, timeit
from rerankd.logs import configure_server_output
from rerankd.server.middleware import ServingMiddleware

mw = ServingMiddleware.__new__(ServingMiddleware)
scope = {"method": "POST", "path": "/v1/rerank"}
fields = {"model": "m", "documents": 32, "tokens": 9000, "truncated": 0, "cache_hits": 0,
          "tokenize_ms": 1.0, "queue_ms": 2.0, "inference_ms": 3.0}
for json_lines in (False, True, False, True):
    configure_server_output(json_lines=json_lines, access=True)
    mw.json_logs = json_lines
    n = 20000
    best = min(timeit.repeat(lambda: mw._log_access(scope, "abc", "/v1/rerank", 200, 0.0123, fields), number=n, repeat=3))
    print(f"{'json' if json_lines else 'text'}: {best / n * 1e6:.1f} us per access line", file=sys.__stdout__)
