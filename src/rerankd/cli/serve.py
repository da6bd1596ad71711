"""`rerankd serve`: the HTTP server in one process, in N worker processes, or on Ray Serve; drains on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import tempfile
import threading
from dataclasses import fields
from types import FrameType

import click

from rerankd.cli.options import option, setting_options
from rerankd.engine.calibration import load_calibrations
from rerankd.errors import ErrorKind, RerankdError
from rerankd.logs import configure_server_output, status_log
from rerankd.settings import DEFAULT_MODEL, SERVE_SETTINGS, Settings, env_name, settings_from_env


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
    to --drain-timeout seconds to finish. --workers N runs N processes on one port,
    each with its own model; --ray deploys the app to Ray Serve (docs/scaling.md).
    """
    from rerankd.server.models import parse_model_specs

    specs = parse_model_specs(models)  # fail here, not in N workers
    load_calibrations(settings.calibration, [name for name, _ in specs])
    # Before anything is printed: the supervisor's and the Ray driver's lines follow --json-logs too.
    configure_server_output(json_lines=settings.json_logs, access=not settings.quiet)
    if settings.ray:
        _serve_on_ray(specs, settings)
    elif settings.workers > 1:
        _serve_workers(models, settings)
    else:
        _serve_one_process(specs, settings)


def _uvicorn_options(settings: Settings) -> dict:
    from rerankd.server.drain import ABORT_GRACE_SECONDS

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": logging.getLevelName(logging.getLogger().level).lower(),
        "access_log": False,
        # With --json-logs uvicorn's own loggers go through the root logger's JSON formatter, not its text one.
        **({"log_config": None} if settings.json_logs else {}),
        # Our drain has already waited for the requests in flight; this is for the 503s to get out.
        "timeout_graceful_shutdown": max(1, int(ABORT_GRACE_SECONDS)),
    }


def _serve_one_process(specs: list[tuple[str, str]], settings: Settings) -> None:
    import uvicorn

    from rerankd.server.app import create_app
    from rerankd.server.metrics import Metrics
    from rerankd.server.models import ModelRegistry

    metrics = Metrics()
    registry = ModelRegistry(settings, specs, metrics)
    load_errors: list[BaseException] = []

    def stop_serving(error: BaseException) -> None:
        # A server that can never score must exit non-zero, so that an orchestrator restarts it.
        load_errors.append(error)
        server.should_exit = True

    app = create_app(settings, registry, metrics, on_load_failure=stop_serving)
    config = uvicorn.Config(app, **_uvicorn_options(settings))
    server = draining_server(config, app.state.draining, app.state.in_flight, registry, settings)
    server.run()
    if load_errors:
        raise RerankdError(ErrorKind.MODEL_LOAD, f"no model to serve, exiting: {load_errors[0]}")


def draining_server(config, draining: asyncio.Event, in_flight, registry, settings: Settings):  # type: ignore[no-untyped-def]
    """uvicorn's server, but the first SIGTERM/SIGINT drains before it stops accepting.

    Built here, not at import, because uvicorn is only in the `server` extra.
    """
    import uvicorn

    from rerankd.server.drain import drain, log_draining

    class DrainingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # bound; the port is the real one also when --port 0 let the system pick it
                announce_address(config.host, self.servers[0].sockets[0].getsockname()[1], settings)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if draining.is_set():  # a second signal: stop now
                super().handle_exit(sig, frame)
                return
            draining.set()
            log_draining(sig, in_flight, settings.drain_timeout)
            asyncio.get_running_loop().create_task(self._drain())

        async def _drain(self) -> None:
            await drain(in_flight, registry, settings.drain_timeout)
            # Not super().handle_exit: uvicorn would re-raise the signal and the process would exit -15
            # after a clean drain.
            self.should_exit = True

    return DrainingServer(config)


def announce_address(host: str, port: int, settings: Settings, how: str = "") -> None:
    """Where the server listens, and the pages to open there; printed once, by the process that binds."""
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    status_log.info("listening on %s%s; Ctrl+C to stop", url, f" ({how})" if how else "")
    if settings.no_playground:
        status_log.info("API docs: %s/docs", url)
    else:
        status_log.info("API docs: %s/docs   playground: %s/playground", url, url)


# --- N worker processes ----------------------------------------------------------------------------

WORKER_HEALTHCHECK_S = 60


def _serve_workers(models: tuple[str, ...], settings: Settings) -> None:
    """uvicorn's supervisor with N spawned workers on one socket; each builds the app from the environment."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from rerankd.model.threads import model_threads

    export_settings(models, settings)
    # Each worker's Rust tokenizer (a rayon pool, one thread per core by default) gets the same share of the
    # cores as its model instead of all of them.
    os.environ.setdefault("RAYON_NUM_THREADS", str(model_threads(settings.threads, settings.workers)))
    os.environ["RERANKD_LOG_LEVEL"] = logging.getLevelName(logging.getLogger().level).lower()
    if settings_from_env() != (models, settings):
        raise RerankdError(
            ErrorKind.INVALID_INPUT,
            "a setting does not survive the trip to the worker processes through the environment (a comma in "
            "a repeatable value?); set it so that RERANKD_<NAME> reads back the same",
        )
    with tempfile.TemporaryDirectory(prefix="rerankd-metrics-") as metrics_dir:
        # Fresh for every run: prometheus_client in each worker keeps its values there, /metrics adds them up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        config = uvicorn.Config(
            "rerankd.server.asgi:create_app_from_env", factory=True, workers=settings.workers,
            # uvicorn kills a worker that has not answered its ping within this; its 5 s default killed workers
            # still starting Python on a busy 2-core host (load 10), over and over.
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            **_uvicorn_options(settings),
        )
        # uvicorn.run(workers=N) without its wrapper, to see why the supervisor stopped: it also stops, and
        # would exit 0, when a worker can't start (a model that doesn't load fails the same way in every one).
        sock = config.bind_socket()
        announce_address(config.host, sock.getsockname()[1], settings, f"{settings.workers} worker processes")
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        raise RerankdError(ErrorKind.MODEL_LOAD, "a worker process failed to start; its error is logged above")


def export_settings(models: tuple[str, ...], settings: Settings) -> None:
    """Write `models` and `settings` to this process's `RERANKD_*` variables, which the workers inherit.

    The inverse of `rerankd.settings.settings_from_env`, which each worker runs.
    """
    values = {"model": models, **{f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "model"}}
    for name, value in values.items():
        if value is None:
            os.environ.pop(env_name(name), None)  # None is the default: an inherited value must not win
        elif isinstance(value, bool):
            os.environ[env_name(name)] = "1" if value else "0"
        elif isinstance(value, tuple):
            os.environ[env_name(name)] = ",".join(value)
        else:
            os.environ[env_name(name)] = str(value)


# --- Ray Serve -------------------------------------------------------------------------------------


def _serve_on_ray(specs: list[tuple[str, str]], settings: Settings) -> None:
    """Like `serve run`: deploy, stay in the foreground, and take the application down on SIGTERM/SIGINT."""
    import ray
    from ray import serve as ray_serve

    from rerankd.server.ray_serve import APP_NAME, rerankd_application

    local = settings.ray_address is None
    if local:
        # "local" starts a cluster of our own even where another one runs on this host; its dashboard
        # would only cost start-up time.
        ray.init(address="local", include_dashboard=False)
    else:
        ray.init(address=settings.ray_address)
    try:
        # After ray.init, which installs handlers of its own; a signal during the deployment stops us once
        # it is done, through the same clean path.
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
        ray_serve.start(http_options={"host": settings.host, "port": settings.port})
        ray_serve.run(rerankd_application(specs, settings), name=APP_NAME, route_prefix="/")
        announce_address(settings.host, settings.port, settings,
                         f"Ray Serve, {'a local cluster' if local else settings.ray_address}")
        stop.wait()
        status_log.warning("stopping: Ray Serve drains the replicas for up to %g s", settings.drain_timeout)
        if local:
            ray_serve.shutdown()
        else:
            ray_serve.delete(APP_NAME)  # the cluster and its other applications stay up
        status_log.info("stopped")
    finally:
        ray.shutdown()
