"""Test data and helpers shared by test modules (conftest.py holds only fixtures)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Pairs that cover English, Chinese, mixed scripts, full-width characters,
# repeated whitespace, an empty document and long documents that need cutting.
LONG_EN = " ".join(f"Sentence {i} talks about bamboo forests, rivers and the mountains of Sichuan." for i in range(80))
LONG_ZH = "大熊猫生活在四川的竹林里，每天花很多时间吃竹子。" * 60
PAIRS = [
    ("What do giant pandas eat?", "The giant panda's diet is over 99% bamboo."),
    ("What do giant pandas eat?", "Panda Express is a fast-food chain."),
    ("大熊猫主要吃什么？", "大熊猫的食物中百分之九十九是竹子。"),
    ("大熊猫主要吃什么？", "熊猫电子是一家中国电子企业。"),
    ("mixed 中文 and English", "ＡＢＣ１２３ full-width   text with   spaces, café naïve"),
    ("empty document", ""),
    ("a long English document", LONG_EN),
    ("一篇很长的中文文档", LONG_ZH),
    ("short", "x"),
]



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port, with no persistence; can be killed and restarted."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; scripts/test.sh installs it (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60  # a deadline, not a measurement: it starts in milliseconds when idle
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        pytest.fail("redis-server did not start within 60 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout} s")
