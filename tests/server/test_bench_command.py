"""`rerankd bench` against a real `rerankd serve` on loopback: bounded by count, JSON and PNG written, traffic only
to the endpoint given, and its API key read from its own environment variable, never the server's.

Here rather than in tests/cli because it needs the server harness of this directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from click.testing import CliRunner
from server_harness import ServerProcess, wait_until

from rerankd.cli.main import cli

KEY = "bench-key"
# A deadline on events (a metric counted), never a measurement.
EVENT_S = 120


@pytest.fixture(scope="module")
def keyed_server(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_module_server([xlmr_dir], ["--api-key", KEY, "--quiet"])


def ok_requests(server: ServerProcess, route: str) -> float:
    return server.metric("rerankd_requests_total", route=route, status="200") or 0.0


def run_bench(args: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["bench", *args], env=env, catch_exceptions=False)


def test_a_concurrency_sweep_writes_its_table_json_and_plot(keyed_server: ServerProcess, tmp_path: Path) -> None:
    before = ok_requests(keyed_server, "/v2/rerank")
    out, plot = tmp_path / "results.json", tmp_path / "latency.png"
    result = run_bench(["--url", keyed_server.url, "--concurrency", "1,2", "--requests", "4", "--documents", "3",
                        "--doc-words", "50", "--out", str(out), "--plot", str(plot)],
                       env={"RERANKD_BENCH_API_KEY": KEY})
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[0].split()[:4] == ["concurrency", "requests", "ok", "pairs/s"]
    assert [row.split()[:3] for row in table[1:3]] == [["1", "4", "4"], ["2", "4", "4"]]

    saved = json.loads(out.read_text())
    assert saved["endpoint"] == keyed_server.url + "/v2/rerank" and saved["mode"] == "concurrency"
    assert saved["options"]["api_key"] == "(given)" and KEY not in out.read_text()
    assert [level["concurrency"] for level in saved["levels"]] == [1, 2]
    for level in saved["levels"]:
        summary = level["summary"]
        assert summary["requests"] == summary["ok"] == 4 and summary["ok_pairs"] == 12
        assert summary["ok_tokens"] > 12 * 50  # from the server's usage: 50 words are more than 50 tokens here
        assert summary["latency_ok_s"]["p50"] > 0
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # The endpoint check plus 4 requests per level, all to the one endpoint.
    wait_until(lambda: ok_requests(keyed_server, "/v2/rerank") == before + 1 + 8, timeout=EVENT_S,
               message="9 more requests counted")


def test_an_open_loop_in_tei_shape_counts_its_requests(keyed_server: ServerProcess) -> None:
    before = ok_requests(keyed_server, "/rerank")
    result = run_bench(["--url", keyed_server.url, "--api", "tei", "--rate", "50", "--requests", "3",
                        "--documents", "2", "--api-key", KEY])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()[:2]
    assert header.split()[0] == "rate" and row.split()[:3] == ["50", "3", "3"]
    wait_until(lambda: ok_requests(keyed_server, "/rerank") == before + 1 + 3, timeout=EVENT_S,
               message="4 more requests counted")


def test_bench_never_reads_the_servers_api_key_variable(keyed_server: ServerProcess) -> None:
    result = CliRunner().invoke(cli, ["bench", "--url", keyed_server.url, "--requests", "1"],
                                env={"RERANKD_API_KEY": KEY, "RERANKD_BENCH_API_KEY": None})
    assert result.exit_code != 0
    assert "answered 401 (pass --api-key)" in result.output


def test_a_data_file_is_sent_as_given(keyed_server: ServerProcess, tmp_path: Path) -> None:
    data = tmp_path / "requests.jsonl"
    data.write_text(json.dumps({"query": "pandas?", "documents": ["bamboo", "fast food", "forest"]}) + "\n")
    out = tmp_path / "data.json"
    result = run_bench(["--url", keyed_server.url, "--api", "jina", "--data", str(data), "--concurrency", "2",
                        "--requests", "3", "--api-key", KEY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    [level] = json.loads(out.read_text())["levels"]
    assert level["summary"]["ok_pairs"] == 9 and level["summary"]["short_answers"] == 0


def test_bad_data_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"query": "q", "documents": ["a"]}\n{"query": "q"}\n')
    result = run_bench(["--url", "http://127.0.0.1:9", "--data", str(data), "--requests", "1"])
    assert result.exit_code != 0 and f"{data}:2: expected" in result.output


def test_a_progress_bar_runs_on_a_terminal(keyed_server: ServerProcess) -> None:
    terminal, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    env = {**os.environ, "RERANKD_BENCH_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "rerankd.cli.main", "bench", "--url", keyed_server.url,
                             "--concurrency", "1", "--requests", "3", "--documents", "2"],
                            stdin=subprocess.DEVNULL, stdout=child_end, stderr=child_end, env=env)
    os.close(child_end)
    printed = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        printed += chunk
    os.close(terminal)
    assert proc.wait(timeout=EVENT_S) == 0, printed
    text = printed.decode()
    assert "concurrency 1: 100%" in text and "3/3" in text, text
