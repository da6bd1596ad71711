"""gunicorn + uvicorn workers running rerankd: N processes on one port, each with its own model and batcher.

    pip install "rerankd[server]" gunicorn uvicorn-worker
    RERANKD_MODEL=BAAI/bge-reranker-v2-m3 RERANKD_WORKERS=4 gunicorn -c deploy/gunicorn/gunicorn.conf.py

rerankd's settings come from RERANKD_* as for `rerankd serve` (RERANKD_MODEL=a,b for several models);
`rerankd serve --workers N` does the same without gunicorn (docs/scaling.md).
"""

import math
import os
import shutil
import tempfile

wsgi_app = "rerankd.server.asgi:create_app_from_env()"
worker_class = "uvicorn_worker.UvicornWorker"

# RERANKD_WORKERS is both the process count and how the cores are shared out between the models.
workers = int(os.environ.setdefault("RERANKD_WORKERS", "2"))
bind = f"{os.environ.get('RERANKD_HOST', '127.0.0.1')}:{os.environ.get('RERANKD_PORT', '8080')}"

# A worker answers nothing until its model is loaded and warm; gunicorn must not take that for a hang.
timeout = 300
# SIGTERM drains each worker for up to RERANKD_DRAIN_TIMEOUT (30 s), then gives the 503s 5 s to get out.
graceful_timeout = math.ceil(float(os.environ.get("RERANKD_DRAIN_TIMEOUT", "30"))) + 15

# Prometheus multiprocess mode: every worker keeps its values in files here and /metrics adds them up.
# It must be set before a worker imports prometheus_client, and be empty at start. /metrics itself drops
# the gauges of workers that are gone, so no child_exit hook is needed.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rerankd-metrics-")
    _metrics_dir_is_ours = True
else:
    _metrics_dir_is_ours = False


def on_exit(server):  # noqa: ARG001 - gunicorn's hook signature
    if _metrics_dir_is_ours:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
