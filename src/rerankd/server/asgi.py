"""The app for servers that start it themselves, in each of their worker processes.

`rerankd serve --workers N` runs uvicorn with `rerankd.server.asgi:create_app_from_env`
as a factory; gunicorn takes `rerankd.server.asgi:create_app_from_env()` (see
deploy/gunicorn/gunicorn.conf.py). Each process gets its own model and scheduler.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from rerankd.logs import configure_logging
from rerankd.server.app import create_app
from rerankd.server.metrics import Metrics
from rerankd.server.models import ModelRegistry, parse_model_specs
from rerankd.settings import settings_from_env


def create_app_from_env() -> FastAPI:
    """The app `rerankd serve` would run, configured by `RERANKD_*` only (`RERANKD_MODEL=a,b` for several models).

    The worker takes no connection before its models are loaded, so a worker that is
    still loading (or restarting) never answers "not ready" while its siblings serve.
    """
    configure_logging(os.environ.get("RERANKD_LOG_LEVEL", "warning"))
    models, settings = settings_from_env()
    metrics = Metrics()
    registry = ModelRegistry(settings, parse_model_specs(models), metrics)
    return create_app(settings, registry, metrics, wait_for_models=True, drain_on_signal=True)
