"""The `rerankd` command: score, demo, rerank, download, make-test-model and the env-var rule."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from unittest import mock

import click
import pytest
from click.testing import CliRunner

from rerankd import Reranker
from rerankd.cli.main import cli
from rerankd.cli.options import option, settings_from_values
from rerankd.settings import settings_from_env


@pytest.fixture
def run(xlmr_dir):
    runner = CliRunner()

    def invoke(*args, env=None, input=None):
        return runner.invoke(cli, [str(a) for a in args], env=env, input=input, catch_exceptions=False)

    return invoke


def test_score_prints_each_documents_score_in_input_order(run, xlmr_dir, reranker):
    result = run("score", "--model", xlmr_dir, "--device", "cpu", "what do pandas eat?", "bamboo", "fast food")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["[0]", "[1]"]
    expected = reranker.compute_score([("what do pandas eat?", "bamboo"), ("what do pandas eat?", "fast food")])
    assert [float(line.split()[1]) for line in lines] == pytest.approx(expected, abs=1e-6)


def test_score_json_and_raw(run, xlmr_dir, reranker):
    result = run("score", "--model", xlmr_dir, "--json", "--raw", "q", "a", "b")
    data = json.loads(result.stdout)
    assert [d["index"] for d in data] == [0, 1]
    assert [d["score"] for d in data] == pytest.approx(
        reranker.compute_score([("q", "a"), ("q", "b")], normalize=False), abs=1e-6
    )


def test_demo_prints_rankings_fixture_warning_and_time_split(run, xlmr_dir):
    result = run("demo", "--model", xlmr_dir)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "random-weight test fixture" in out and "NOT relevance" in out
    assert "query [en]" in out and "query [zh]" in out
    assert len(re.findall(r"^\s+1 \* \d\.\d{4}", out, flags=re.M)) == 2  # best match marked in each
    assert out.count("<- the answer") == 2
    assert re.search(r"time\s+load [\d.]+ ms \| tokenize [\d.]+ ms \| inference [\d.]+ ms \| total [\d.]+ ms", out)


def test_rerank_reads_plain_lines_and_writes_json_lines(run, xlmr_dir, tmp_path, reranker):
    docs = ["first doc", "", "second doc", "third doc"]
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    result = run("rerank", "--model", xlmr_dir, "-q", "query", "--input", tmp_path / "in.txt", "--top-n", "2")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2]
    texts = ["first doc", "second doc", "third doc"]
    scores = reranker.compute_score([("query", t) for t in texts])
    best = sorted(range(3), key=lambda i: -scores[i])[:2]
    assert [r["index"] for r in rows] == best
    assert [r["line"] for r in rows] == [[1, 3, 4][i] for i in best]
    assert rows[0]["document"] == texts[best[0]]


def test_rerank_reads_json_lines_and_keeps_the_records(run, xlmr_dir, tmp_path):
    lines = [json.dumps({"id": "a", "text": "熊猫吃竹子"}), json.dumps("plain string doc")]
    (tmp_path / "in.jsonl").write_text("\n".join(lines), encoding="utf-8")
    result = run("rerank", "--model", xlmr_dir, "-q", "熊猫", "-i", tmp_path / "in.jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {json.dumps(r["document"], ensure_ascii=False) for r in rows} == {
        json.dumps({"id": "a", "text": "熊猫吃竹子"}, ensure_ascii=False),
        '"plain string doc"',
    }


def test_rerank_shows_a_progress_bar_on_stderr_for_long_inputs(xlmr_dir, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(f"document number {i}" for i in range(200)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["rerank", "--model", str(xlmr_dir), "-q", "q", "-i", str(tmp_path / "in.txt")])
    assert result.exit_code == 0
    assert "200/200" in result.stderr
    assert len(result.stdout.splitlines()) == 200


def test_undecodable_or_invalid_lines_are_reported_by_line_number(run, xlmr_dir, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine\nalso fine\n\xff\xfe broken\n")
    result = CliRunner().invoke(cli, ["rerank", "--model", str(xlmr_dir), "-q", "q", "-i", str(tmp_path / "bad.txt")])
    assert result.exit_code == 1 and "input line 3 is not valid UTF-8" in result.stderr
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["rerank", "--model", str(xlmr_dir), "-q", "q", "-i", str(tmp_path / "bad.jsonl")]
    )
    assert result.exit_code == 1 and "input line 2 is not valid JSON" in result.stderr
    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["rerank", "--model", str(xlmr_dir), "-q", "q", "-i", str(tmp_path / "nofield.jsonl")]
    )
    assert result.exit_code == 1 and "input line 1: expected a JSON string or an object" in result.stderr


def test_every_flag_also_comes_from_the_environment(xlmr_dir):
    runner = CliRunner()
    env = {"RERANKD_MODEL": str(xlmr_dir), "RERANKD_JSON": "1", "RERANKD_MAX_LENGTH": "4"}
    result = runner.invoke(cli, ["score", "q", "d"], env=env)
    assert result.exit_code == 1 and "max_length must be at least 8" in result.stderr
    env["RERANKD_MAX_LENGTH"] = "64"
    result = runner.invoke(cli, ["score", "q", "d"], env=env)
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["index"] == 0
    result = runner.invoke(cli, ["score", "--max-length", "4", "q", "d"], env={**env, "RERANKD_MAX_LENGTH": "64"})
    assert "max_length must be at least 8" in result.stderr  # the flag wins over the environment
    assert "RERANKD_MAX_BATCH_TOKENS" in runner.invoke(cli, ["score", "--help"]).output


def test_serve_reads_the_environment_as_its_worker_processes_do():
    env = {"RERANKD_MODEL": "a=/m/a, /m/b", "RERANKD_WORKERS": "2", "RERANKD_NO_CACHE": "Off",
           "RERANKD_JSON_LOGS": "y", "RERANKD_API_KEY": "k1, k2,", "RERANKD_MAX_BATCH_TOKENS": "2048",
           "RERANKD_REQUEST_TIMEOUT": "30", "RERANKD_TRUNCATION": "error", "RERANKD_CACHE_URL": "redis://r/0"}
    serve = cli.commands["serve"]
    with mock.patch.dict(os.environ, env, clear=True):
        params = dict(serve.make_context("serve", []).params)
        from_cli = tuple(params.pop("models")), settings_from_values(params)
        assert from_cli == settings_from_env()
    assert from_cli[0] == ("a=/m/a", "/m/b") and from_cli[1].api_key == ("k1", "k2") and from_cli[1].json_logs


def test_a_bad_setting_in_the_environment_names_its_variable(xlmr_dir):
    result = CliRunner().invoke(cli, ["score", "--model", str(xlmr_dir), "q", "d"], env={"RERANKD_MAX_LENGTH": "long"})
    assert result.exit_code == 1 and "RERANKD_MAX_LENGTH must be an integer, got 'long'" in result.stderr


def test_repeatable_flags_take_a_comma_separated_list_from_the_environment():
    @click.command()
    @option("--tag", multiple=True)
    def tags(tag):
        click.echo("|".join(tag))

    assert CliRunner().invoke(tags, [], env={"RERANKD_TAG": "a, b,c"}).output.strip() == "a|b|c"
    assert CliRunner().invoke(tags, ["--tag", "x"], env={"RERANKD_TAG": "a,b"}).output.strip() == "x"


def test_missing_model_directory_is_a_clear_error(run, tmp_path):
    result = CliRunner().invoke(cli, ["score", "--model", str(tmp_path / "missing"), "q", "d"])
    assert result.exit_code == 1 and f"model directory not found: {tmp_path / 'missing'}" in result.stderr


def test_make_test_model_is_deterministic(tmp_path, xlmr_dir):
    result = CliRunner().invoke(cli, ["make-test-model", str(tmp_path / "m"), "--seed", "0"])
    assert result.exit_code == 0, result.output
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert hashlib.sha256((tmp_path / "m" / name).read_bytes()).digest() == hashlib.sha256(
            (xlmr_dir / name).read_bytes()
        ).digest()


def _offline_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "RERANKD_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    return env


def test_installed_command_runs_and_offline_hub_model_says_how_to_fix(tmp_path):
    command = [sys.executable, "-m", "rerankd.cli.main"]
    assert subprocess.run([*command, "--version"], capture_output=True, text=True, check=True).stdout.startswith(
        "rerankd"
    )
    result = subprocess.run([*command, "score", "q", "d"], capture_output=True, text=True, env=_offline_env(tmp_path))
    assert result.returncode == 1
    assert "cannot load model 'BAAI/bge-reranker-v2-m3'" in result.stderr
    assert "rerankd download BAAI/bge-reranker-v2-m3" in result.stderr


def test_download_offline_fails_cleanly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rerankd.cli.main", "download", "BAAI/bge-reranker-v2-m3"],
        capture_output=True,
        text=True,
        env=_offline_env(tmp_path),
    )
    assert result.returncode == 1 and "cannot download 'BAAI/bge-reranker-v2-m3'" in result.stderr


def test_rerank_chunk_writes_the_windows_and_highlight_of_each_document(run, xlmr_dir, tmp_path, reranker):
    long_doc = " ".join(f"Sentence {i} is about bamboo, rivers and mountains." for i in range(60))
    (tmp_path / "in.txt").write_text(f"{long_doc}\nshort doc\n", encoding="utf-8")
    result = run("rerank", "--model", xlmr_dir, "-q", "bamboo", "--input", tmp_path / "in.txt",
                 "--truncation", "chunk", "--max-length", "64", "--chunk-overlap", "8")
    rows = {r["index"]: r for r in map(json.loads, result.stdout.splitlines())}
    expected = Reranker(str(xlmr_dir), device="cpu", max_length=64, truncation="chunk", chunk_overlap=8)
    report = expected.score_query("bamboo", [long_doc, "short doc"])
    for i, chunked in enumerate(report.chunks):
        assert rows[i]["chunks"] == chunked.chunks
        assert rows[i]["highlight"] == {"start": chunked.highlight.start, "end": chunked.highlight.end}
        assert rows[i]["score"] == pytest.approx(report.scores()[i], abs=1e-6)
    assert rows[0]["chunks"] > 5 and rows[1]["highlight"] == {"start": 0, "end": len("short doc")}


def test_score_error_mode_refuses_a_pair_over_the_limit(xlmr_dir):
    result = CliRunner().invoke(cli, ["score", "--model", str(xlmr_dir), "--max-length", "16", "--truncation",
                                      "error", "q", "a document much longer than sixteen tokens " * 3])
    assert result.exit_code != 0 and "max_length" in result.output


def test_make_test_model_takes_max_positions(tmp_path):
    result = CliRunner().invoke(cli, ["make-test-model", str(tmp_path / "m"), "--max-positions", "2050"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["max_position_embeddings"] == 2050
    assert Reranker(str(tmp_path / "m"), device="cpu", max_length=2048).encoder.max_length == 2048
