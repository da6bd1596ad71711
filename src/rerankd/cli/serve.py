"""`rerankd serve`: the HTTP server, with a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType

import click

from rerankd.cli.options import option, setting_options
from rerankd.settings import DEFAULT_MODEL, SETTING_NAMES, Settings

log = logging.getLogger(__name__)

# After the drain deadline, time for the 503s to reach their clients.
ABORT_GRACE_SECONDS = 5.0
SERVE_SETTINGS = tuple(name for name in SETTING_NAMES if name != "model")


@click.command()
@option(
    "--model",
    "models",
    multiple=True,
    default=(DEFAULT_MODEL,),
    show_default=True,
    metavar="[NAME=]ID|DIR",
    help="Model to serve: a hub id or local directory, optionally named NAME=... (repeatable: the request's "
    "'model' then picks one).",
)
@setting_options(*SERVE_SETTINGS)
def serve(models: tuple[str, ...], settings: Settings) -> None:
    """Serve the rerank API (Cohere, Jina, vLLM and TEI dialects) over HTTP.

    /health answers at once; /ready turns 200 when every model is loaded and warm.
    On SIGTERM /ready turns 503, new requests get 503, and requests in flight get up
    to --drain-timeout seconds to finish.
    """
    import uvicorn

    from rerankd.server.app import create_app
    from rerankd.server.metrics import Metrics
    from rerankd.server.models import ModelRegistry, parse_model_specs

    metrics = Metrics()
    registry = ModelRegistry(settings, parse_model_specs(models), metrics)
    app = create_app(settings, registry, metrics)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        access_log=False,
        timeout_graceful_shutdown=max(1, int(ABORT_GRACE_SECONDS)),
    )
    draining_server(config, app.state.draining, app.state.in_flight, registry, settings.drain_timeout).run()


def draining_server(config, draining: asyncio.Event, in_flight, registry, drain_timeout: float):  # type: ignore[no-untyped-def]
    """uvicorn's server, but the first SIGTERM/SIGINT drains before it stops accepting.

    Built here, not at import, because uvicorn is only in the `server` extra.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if draining.is_set():  # a second signal: stop now
                super().handle_exit(sig, frame)
                return
            draining.set()
            log.warning("%s: draining; %d request(s) in flight", signal.Signals(sig).name, in_flight.count)
            asyncio.get_running_loop().create_task(self._drain())

        async def _drain(self) -> None:
            try:
                await asyncio.wait_for(in_flight.idle.wait(), drain_timeout)
            except TimeoutError:
                log.warning("drain deadline of %g s passed with %d request(s) in flight; answering them 503",
                            drain_timeout, in_flight.count)
                registry.abort("the server shut down before this request finished (--drain-timeout); retry")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(in_flight.idle.wait(), ABORT_GRACE_SECONDS)
            # Not super().handle_exit: uvicorn would re-raise the signal and the process would exit -15
            # after a clean drain.
            self.should_exit = True

    return DrainingServer(config)
