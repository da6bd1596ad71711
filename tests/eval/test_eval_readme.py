"""The README's eval/calibrate walk-through runs as written, with the fixture in place of the real model."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from rerankd.cli.main import cli
from rerankd.cli.serve import serve
from rerankd.engine.calibration import load_calibrations

ROOT = Path(__file__).resolve().parents[2]
REAL_MODEL = "BAAI/bge-reranker-v2-m3"


def walkthrough_commands() -> list[list[str]]:
    """The `rerankd eval|calibrate|serve` commands of the README's section, as argument lists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quality on your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith("rerankd ")]


def test_the_walkthrough_runs_as_written(xlmr_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = walkthrough_commands()
    assert [c[0] for c in commands] == ["eval", "calibrate", "serve"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    runner = CliRunner()
    for args in commands:
        args = [str(xlmr_dir) if a == REAL_MODEL else a for a in args]
        if args[0] == "eval":
            args += ["--top-k", "5"]  # the last value wins: fewer candidates, the same command
        if args[0] == "serve":  # parse it and load its calibration, without serving
            ctx = serve.make_context("serve", args[1:])
            assert load_calibrations(ctx.params["calibration"], [str(xlmr_dir)])[str(xlmr_dir)].source
            assert ctx.params["min_score"] == 0.5
            continue
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, f"rerankd {shlex.join(args)}\n{result.output}"
    systems = json.loads((tmp_path / "eval-out" / "results.json").read_text())["systems"]
    assert [s["name"] for s in systems] == ["bm25", "fp32", "int8"]
    assert (tmp_path / "calib" / "calibration.json").is_file()
