"""The app factory: settings, a model registry and metrics in, a FastAPI app out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from rerankd import __version__
from rerankd.logs import configure_server_output, status_log
from rerankd.server.auth import ApiKeyMiddleware
from rerankd.server.drain import drain_before_exit
from rerankd.server.errors import install_error_handlers
from rerankd.server.metrics import Metrics
from rerankd.server.middleware import InFlight, ServingMiddleware
from rerankd.server.models import ModelRegistry
from rerankd.server.playground import add_playground
from rerankd.server.routes import COST_HEADERS, build_router
from rerankd.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Cross-encoder reranking that speaks the APIs RAG tools already use: Cohere (v1, v2),
Jina, vLLM (`/rerank`, `/score`) and Hugging Face TEI (`/rerank` with `texts`).
Requests from all clients share one fair scheduler per model; past capacity the excess
gets a fast 429 with a Retry-After computed from the queue.
"""
# Relative, so the link also works behind a proxy that serves the app under a prefix.
PLAYGROUND_LINK = "\nTry requests in the browser: [the playground](playground).\n"


def _swagger_assets() -> Path:
    # fastapi-offline ships Swagger UI 5 (our OpenAPI document is 3.1, which Swagger UI 4 can't render).
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def create_app(
    settings: Settings,
    registry: ModelRegistry,
    metrics: Metrics,
    *,
    wait_for_models: bool = False,
    drain_on_signal: bool = False,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The rerankd HTTP app. Models load in the background after start-up; /ready says when they are warm.

    `wait_for_models` makes start-up wait for them instead: one of several worker processes
    or Ray replicas then takes no request before it can score. `drain_on_signal` drains on
    SIGTERM in front of a server this code doesn't own (see server/drain.py). `on_load_failure`
    is called when a model fails to load in the background, so the server can exit non-zero
    and an orchestrator restarts it.
    """
    draining = asyncio.Event()
    in_flight = InFlight()

    def loaded(task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None and on_load_failure is not None:
            on_load_failure(error)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(registry.start())
        loading.add_done_callback(loaded)
        if wait_for_models:
            await loading
        if drain_on_signal:
            drain_before_exit(draining, in_flight, registry, settings.drain_timeout)
        try:
            yield
        finally:
            loading.cancel()
            await registry.close()
            status_log.info("stopped")

    app = FastAPI(
        title="rerankd",
        version=__version__,
        description=DESCRIPTION if settings.no_playground else DESCRIPTION + PLAYGROUND_LINK,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.draining = draining
    app.state.in_flight = in_flight
    install_error_handlers(app)
    router = build_router(settings, registry, metrics, draining)
    app.include_router(router)

    # Swagger UI from files we ship, so /docs works on air-gapped hosts.
    app.mount("/docs-assets", StaticFiles(directory=_swagger_assets()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="rerankd API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    if not settings.no_playground:
        add_playground(app)

    configure_server_output(json_lines=settings.json_logs, access=not settings.quiet, show_pid=settings.workers > 1)
    # Outermost last: the body limit, ids and metrics, then CORS (its preflights need no key, and a 401
    # carries its headers), then the API key, before the app reads any body.
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_key)
    if settings.cors_origin:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origin),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            expose_headers=["X-Request-Id", *COST_HEADERS],
        )
    app.add_middleware(
        ServingMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        json_logs=settings.json_logs,
        access_lines=not settings.quiet,
        in_flight=in_flight,
        route_paths=frozenset(route.path for route in router.routes),
    )
    return app
