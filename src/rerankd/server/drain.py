"""The SIGTERM drain: /ready turns 503 and new requests get 503 while requests in flight finish.

`rerankd serve` with one process owns its uvicorn server and drains in it
(cli/serve.py). Worker processes run a server they don't own (uvicorn's
supervisor, gunicorn's UvicornWorker), so there the app puts the drain in front
of that server's own signal handler instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from types import FrameType

from rerankd.logs import status_log
from rerankd.server.middleware import InFlight
from rerankd.server.models import ModelRegistry

# After the drain deadline, time for the 503s to reach their clients.
ABORT_GRACE_SECONDS = 5.0


async def drain(in_flight: InFlight, registry: ModelRegistry, timeout: float) -> None:
    """Wait up to `timeout` s for the requests in flight; past that, answer the rest 503."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(in_flight.idle.wait(), timeout)
    except TimeoutError:
        status_log.warning("drain deadline of %g s passed with %d request(s) in flight; answering them 503",
                           timeout, in_flight.count)
        registry.abort("the server shut down before this request finished (--drain-timeout); retry")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(in_flight.idle.wait(), ABORT_GRACE_SECONDS)
    else:
        status_log.info("drained in %.1f s: every request in flight was answered", time.perf_counter() - started)


def log_draining(signum: int, in_flight: InFlight, timeout: float) -> None:
    """The first line of a drain, the same from every server that drains."""
    status_log.warning("%s: draining; %d request(s) in flight, waiting up to %g s (--drain-timeout)",
                       signal.Signals(signum).name, in_flight.count, timeout)


def drain_before_exit(draining: asyncio.Event, in_flight: InFlight, registry: ModelRegistry, timeout: float) -> None:
    """Wrap the running server's SIGTERM/SIGINT handlers so that they drain first, then stop the server.

    Call it from the app's lifespan, when the server has installed its handlers. In the
    worker processes a supervisor forwards the signal it got, so one worker may see the
    same stop twice (a process-group SIGINT plus the forwarded SIGTERM): a repeated
    SIGTERM is ignored while draining, and only a second SIGINT (Ctrl-C twice) stops at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread; whoever runs us elsewhere stops us itself
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()  # the loop only keeps weak references to tasks
    for sig in (signal.SIGTERM, signal.SIGINT):
        stop_server = signal.getsignal(sig)
        if not callable(stop_server):
            continue

        def handler(signum: int, frame: FrameType | None, stop_server=stop_server) -> None:  # type: ignore[no-untyped-def]
            if draining.is_set():
                if signum == signal.SIGINT:
                    stop_server(signum, frame)
                return
            draining.set()
            log_draining(signum, in_flight, timeout)

            async def drain_then_stop() -> None:
                await drain(in_flight, registry, timeout)
                stop_server(signum, None)

            task = loop.create_task(drain_then_stop())
            running.add(task)
            task.add_done_callback(running.discard)

        signal.signal(sig, handler)
