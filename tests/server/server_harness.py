"""A real `rerankd serve` in a subprocess, for the HTTP tests in this directory.

`ServerProcess` picks a free loopback port, starts
`python -m rerankd.cli.main [GLOBAL_ARGS] serve --model ... --host 127.0.0.1 --port PORT [ARGS]`
with stdout and stderr going to a log file, waits for `GET /ready` to answer
200 (polling every 50 ms up to a deadline), and on `stop()` sends SIGTERM and
waits (SIGKILL after 15 s).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx
from helpers import LONG_EN, LONG_ZH, PAIRS, wait_until  # noqa: F401  (re-exported for the tests here)
from prometheus_client.parser import text_string_to_metric_families

# Admission limits under which several big requests queue at once on any machine, however slow or busy:
# for tests that need work queued behind other work.
PATIENT = ("--max-queue-wait", "600", "--request-timeout", "600")

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.05


_RUNNING: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """A safety net for interrupted runs: no server outlives the test process."""
    for proc in _RUNNING:
        if proc.poll() is None:
            proc.kill()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """One `rerankd serve` subprocess on a free loopback port."""

    def __init__(
        self,
        models: Iterable[str | os.PathLike[str]],
        args: Iterable[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        global_args: Iterable[str] = (),
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.models = [str(m) for m in models]
        self.args = [str(a) for a in args]
        self.global_args = [str(a) for a in global_args]
        self.extra_env = dict(env or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="rerankd-server-"))
        self.log_path = self._log_dir / "server.log"

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "rerankd.cli.main", *self.global_args, "serve"]
        for model in self.models:
            cmd += ["--model", model]
        return [*cmd, "--host", "127.0.0.1", "--port", str(self.port), *self.args]

    def start(self, wait: bool = True, ready_timeout: float = READY_TIMEOUT_S) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
        env.update(self.extra_env)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        for attempt in range(3):
            self.port = free_port()
            self.log_path = self._log_dir / f"server-{self.port}.log"
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
            _RUNNING.append(self.proc)
            if not wait:
                return self
            try:
                self.wait_ready(ready_timeout)
                return self
            except ServerError:
                # Another process may have grabbed the port between bind() and the server's bind(): retry.
                if self.proc.poll() is not None and "address already in use" in self.logs().lower() and attempt < 2:
                    continue
                self.kill()
                raise
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerError(f"server exited with {self.proc.returncode} before ready:\n{self.logs()}")
                try:
                    if client.get(self.url + "/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(POLL_S)
        raise ServerError(f"server not ready within {timeout} s:\n{self.logs()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then wait; SIGKILL if it is still there after `timeout` s. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- conveniences -----------------------------------------------------------------------------

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.url, **kwargs)  # type: ignore[arg-type]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every Prometheus sample as {(name, sorted labels): value}."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def queue_pairs(self) -> float:
        """Sum of the queue-depth gauge over models."""
        return sum(v for (name, _), v in self.metrics().items() if name == "rerankd_queue_pairs")

    def queue_requests(self) -> float:
        """Requests queued or running in the model, over models."""
        return sum(v for (name, _), v in self.metrics().items() if name == "rerankd_queue_requests")




def assert_error_body(response: httpx.Response, status: int) -> str:
    """The Cohere/Jina/vLLM error shape: {message, detail, error {message, type, code}}; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"message", "detail", "error"}, body
    assert isinstance(body["message"], str) and body["message"]
    assert body["detail"] == body["message"]
    assert body["error"]["message"] == body["message"]
    assert isinstance(body["error"]["type"], str) and body["error"]["type"]
    assert body["error"]["code"] == status
    return body["message"]


def assert_tei_error_body(response: httpx.Response, status: int) -> str:
    """TEI's error shape: {error, error_type}; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["error_type"], str) and body["error_type"]
    return body["error"]


# Texts shared by the tests: English, Chinese, mixed scripts, an empty document and
# long documents that need truncation at 512 tokens.
QUERY = "What do giant pandas eat?"
DOCS = [
    "The giant panda's diet is over 99% bamboo.",
    "Panda Express is a fast-food chain.",
    "大熊猫的食物中百分之九十九是竹子。",
    "ＡＢＣ１２３ full-width   text with   spaces, café naïve",
    "Red pandas also eat bamboo, plus fruit and insects.",
]
WORDS = "bamboo forest river mountain panda climbing tree eating leaves sleeping".split()


def slow_documents(n: int, words: int = 200) -> list[str]:
    """`n` distinct documents of `words` words (about 490 tokens each on the tiny fixture model)."""
    base = " ".join(WORDS[i % len(WORDS)] for i in range(words))
    return [f"{base} {i}" for i in range(n)]
