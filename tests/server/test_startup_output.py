"""What `rerankd serve` prints on a terminal: what it loads, where it listens, that it is ready, one line per
request, and what it drains on SIGTERM. The server runs under a pseudo-terminal, as at a user's shell."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from server_harness import DOCS, QUERY, READY_TIMEOUT_S, ServerProcess, free_port, wait_until

# A deadline on events (a line printed), never a measurement: generous, so a busy machine only waits longer.
EVENT_S = 120


class TerminalServer(ServerProcess):
    """`rerankd serve` with its stdout and stderr on a pseudo-terminal; what it prints is copied to its log."""

    def start(self, wait: bool = True, ready_timeout: float = READY_TIMEOUT_S) -> TerminalServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
        env.update(self.extra_env)
        env["TOKENIZERS_PARALLELISM"] = "false"
        self.port = free_port()
        self.log_path = self._log_dir / f"terminal-{self.port}.log"
        terminal, child_end = pty.openpty()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=child_end, stderr=child_end,
                                     env=env)
        threading.Thread(target=self._copy, args=(terminal,), daemon=True).start()
        threading.Thread(target=self._hang_up, args=(child_end,), daemon=True).start()
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def _hang_up(self, child_end: int) -> None:
        # Our copy of the terminal's server end stays open until the server is gone, so nothing it printed
        # last is lost to an early hang-up; closing it then ends the copy.
        assert self.proc is not None
        self.proc.wait()
        os.close(child_end)

    def _copy(self, terminal: int) -> None:
        with open(self.log_path, "ab") as log:
            while True:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # EIO: the server closed the terminal
                    chunk = b""
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
        os.close(terminal)

    def lines(self) -> list[str]:
        return [line.strip() for line in self.logs().splitlines() if line.strip()]

    def wait_for_line(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """The first `count` printed lines that match `pattern`, waiting for them."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for m in map(re.compile(pattern).search, self.lines()) if m]
            return len(found) >= count

        try:
            wait_until(seen, timeout=EVENT_S, message=f"{count} line(s) matching {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; printed:\n{self.logs()}") from None
        return found


@pytest.fixture
def terminal_servers(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[TerminalServer] = []

    def start(models: list[str | Path], args: list[str] = (), global_args: list[str] = ()) -> TerminalServer:  # type: ignore[assignment]
        server = TerminalServer(models, ["--device", "cpu", "--dtype", "fp32", *args], global_args=global_args,
                                log_dir=tmp_path)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def test_serve_says_what_it_loads_where_it_listens_and_when_it_is_ready(terminal_servers, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: TerminalServer = terminal_servers([f"tiny={xlmr_dir}"])  # the default --log-level, warning
    url = f"http://127.0.0.1:{server.port}"
    server.wait_for_line(r"ready: serving tiny$")
    lines = server.lines()
    assert f"INFO     listening on {url}; Ctrl+C to stop" in lines
    assert f"INFO     API docs: {url}/docs   playground: {url}/playground" in lines
    assert f"INFO     loading {xlmr_dir} as tiny" in lines
    [model] = [line for line in lines if line.startswith("INFO     model tiny: xlm-roberta")]
    for part in ("(cross-encoder)", "torch on cpu", "fp32", "CPU thread", "max length 512",
                 "batch budget 2048 tokens / 128 pairs"):
        assert part in model, model
    assert any(line.startswith("WARNING  model tiny is a random-weight test fixture") for line in lines)
    assert server.wait_for_line(r"model tiny: warmed up in \d+\.\d+ s")
    # Ready comes after the model is warm.
    assert lines.index(model) < next(i for i, line in enumerate(lines) if "ready: serving" in line)

    with server.client() as client:
        answer = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert answer.status_code == 200
        assert client.post("/v1/rerank", json={"query": ""}).status_code == 422
        assert client.get("/health").status_code == 200
    tokens = answer.json()["usage"]["total_tokens"]
    [access] = server.wait_for_line(rf"POST /v1/rerank 200 docs={len(DOCS)} tokens={tokens} cache_hits=0 "
                                    r"total_ms=\d+\.\d$")
    server.wait_for_line(r"POST /v1/rerank 422 total_ms=")
    assert not any("GET /health" in line for line in server.lines()), "a probe answered 200 got a line"

    server.signal(signal.SIGTERM)
    assert server.wait(timeout=EVENT_S) == 0, server.logs()
    server.wait_for_line(r"^WARNING  SIGTERM: draining; 0 request\(s\) in flight, waiting up to 30 s")
    server.wait_for_line(r"drained in \d+\.\d s")
    assert server.wait_for_line(r"^INFO     stopped$")


def test_quiet_drops_access_lines_and_status_lines_ignore_the_log_level(terminal_servers, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: TerminalServer = terminal_servers([xlmr_dir], ["--quiet", "--no-playground"],
                                              global_args=["--log-level", "error"])
    server.wait_for_line(r"ready: serving")
    with server.client() as client:
        assert client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=EVENT_S) == 0, server.logs()
    lines = server.lines()
    assert any(line.startswith("INFO     listening on http://127.0.0.1:") for line in lines)
    assert "INFO     stopped" in lines
    assert not any("/v1/rerank" in line for line in lines), lines
    assert any(line.startswith("INFO     API docs: http://") for line in lines)
    assert not any("playground" in line for line in lines), "--no-playground still announced the playground"


def test_workers_print_the_address_once_and_each_its_own_model_and_ready_line(terminal_servers, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: TerminalServer = terminal_servers([xlmr_dir], ["--workers", "2"])
    ready = server.wait_for_line(r"^INFO     \[(\d+)\] ready: serving", count=2)
    pids = {m.group(1) for m in ready}
    assert len(pids) == 2, ready
    lines = server.lines()
    assert sum("listening on" in line for line in lines) == 1
    assert any(line.endswith("(2 worker processes); Ctrl+C to stop") for line in lines)
    for pid in pids:
        assert any(re.match(rf"INFO     \[{pid}\] model .*: xlm-roberta \(cross-encoder\), torch on cpu", line) for line in lines)
    response = httpx.post(server.url + "/rerank", json={"query": QUERY, "documents": DOCS}, timeout=EVENT_S)
    assert response.status_code == 200
    [access] = server.wait_for_line(r"^INFO     \[(\d+)\] POST /rerank 200 docs=")
    assert access.group(1) in pids
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=EVENT_S) == 0, server.logs()
    assert len(server.wait_for_line(r"\] stopped$", count=2)) == 2
