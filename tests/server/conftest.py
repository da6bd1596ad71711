"""Fixtures for the HTTP tests: real `rerankd serve` subprocesses on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from helpers import RedisServer
from server_harness import ServerProcess

# Server-side fp32 on the CPU, so scores can be compared with the library's `reranker` fixture.
EXACT = ("--device", "cpu", "--dtype", "fp32")

# The score cache (where the server has one) is off, so every request really goes through the
# tokenizer, the batcher and the model; pass env={"RERANKD_NO_CACHE": "0"} to turn it back on.
# An environment variable rather than --no-cache, so a server without that flag just ignores it.
NO_CACHE = {"RERANKD_NO_CACHE": "1"}

StartServer = Callable[..., ServerProcess]


def _factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    started: list[ServerProcess] = []

    def start(
        models: list[str | Path],
        args: tuple[str, ...] | list[str] = (),
        *,
        env: dict[str, str] | None = None,
        global_args: tuple[str, ...] | list[str] = (),
        wait: bool = True,
    ) -> ServerProcess:
        server = ServerProcess(
            models,
            [*EXACT, *args],
            env={**NO_CACHE, **(env or {})},
            global_args=global_args,
            log_dir=tmp_path_factory.mktemp("server"),
        )
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """Start servers that live for one test: `start_server([model_dir], ["--flag", "value"], env={...})`."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """Like `start_server`, for servers shared by the tests of one module."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="session")
def default_server(xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The tiny XLM-R fixture served with default settings (fp32 on the CPU), shared by the whole session."""
    factory = _factory(tmp_path_factory)
    start = next(factory)
    yield start([xlmr_dir])
    next(factory, None)  # stops it


@pytest.fixture
def client(default_server: ServerProcess) -> Iterator[httpx.Client]:
    with default_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for the tests of one module."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
