"""`rerankd eval` and `rerankd calibrate` end to end on the tiny fixture: example data and a BEIR directory."""

from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import pytest
from click.testing import CliRunner

from rerankd.cli.main import cli
from rerankd.cli.variants import parse_variant
from rerankd.engine.calibration import Calibration
from rerankd.evaluation.data import load_dataset
from rerankd.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: object, code: int = 0):
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == code, result.output
        return result

    return invoke


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six queries over 24 documents; qrels list only the relevant ones, as BEIR's usually do."""
    root = tmp_path_factory.mktemp("beir")
    (root / "qrels").mkdir()
    topics = ["bamboo", "volcano", "violin", "glacier", "espresso", "satellite"]
    with (root / "corpus.jsonl").open("w") as corpus, (root / "queries.jsonl").open("w") as queries:
        for i, topic in enumerate(topics):
            queries.write(json.dumps({"_id": f"q{i}", "text": f"facts about the {topic}"}) + "\n")
            for j in range(4):
                text = f"The {topic} is described in note {j}." if j < 2 else f"Unrelated note {i}-{j} on weather."
                corpus.write(json.dumps({"_id": f"{topic}-{j}", "title": "", "text": text}) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{t}-0\t2\nq{i}\t{t}-1\t1\n" for i, t in enumerate(topics))
    )
    return root


def png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000, path
    return data


def test_eval_on_a_beir_directory_writes_results_that_ir_measures_reproduces(run, xlmr_dir, beir_dir, tmp_path):
    out = tmp_path / "out"
    result = run("eval", "--data", beir_dir, "--model", xlmr_dir, "--device", "cpu", "--top-k", "8",
                 "--relevant-min", "2", "--variant", "short=--max-length 24", "--out", out)
    assert "random-weight test fixture" in result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines if line.split() and line.split()[0] in ("bm25", "base", "short")] == [
        "bm25", "base", "short"]

    summary = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in summary["systems"]] == ["bm25", "base", "short"]
    assert summary["queries"] == 6 and summary["top_k"] == 8
    qrels = load_dataset(beir_dir).relevant(2)
    for system in summary["systems"]:
        run_file = out / system["run_file"]
        expected = ir_measures.calc_aggregate(
            [ir_measures.nDCG @ 10, ir_measures.RR @ 10, ir_measures.R @ 10, ir_measures.R @ 20],
            qrels, ir_measures.read_trec_run(str(run_file)))
        assert system["metrics"] == pytest.approx({
            "nDCG@10": expected[ir_measures.nDCG @ 10], "MRR@10": expected[ir_measures.RR @ 10],
            "R@10": expected[ir_measures.R @ 10], "R@20": expected[ir_measures.R @ 20]})
        assert len(run_file.read_text().splitlines()) == 6 * 8
    short = summary["systems"][2]
    assert short["settings"]["max_length"] == 24 and short["flags"] == "--max-length 24"
    assert short["pairs"] == 48 and short["pairs_per_second"] > 0
    versus = short["vs_first_variant"]
    assert versus["variant"] == "base" and 0 <= versus["top10_changed"] <= 1
    assert set(versus["ttest_rel"]) == {"nDCG@10", "MRR@10", "R@10", "R@20"}
    png(out / "report.png")

    # The first stage's run file, given back as the user's own run, is the same first stage.
    again = run("eval", "--data", beir_dir, "--model", xlmr_dir, "--run", out / "run.bm25.trec", "--top-k", "8",
                "--relevant-min", "2", "--out", tmp_path / "again")
    assert "from " + str(out / "run.bm25.trec") in again.output
    first = json.loads((tmp_path / "again" / "results.json").read_text())["systems"][0]
    assert first["name"] == "run" and first["metrics"] == summary["systems"][0]["metrics"]


def test_variant_flags_are_rerankd_scores_and_change_only_what_they_name() -> None:
    base = Settings(model="m", device="cpu", max_length=256)
    name, settings, flags = parse_variant("int8=--dtype int8 --max-batch-size 4", base)
    assert (name, flags) == ("int8", "--dtype int8 --max-batch-size 4")
    assert settings == base.with_changes(dtype="int8", max_batch_size=4)


@pytest.mark.parametrize(("spec", "message"), [
    ("int8", "expected NAME=FLAGS"),
    ("bad name=--dtype int8", "expected NAME=FLAGS"),
    ("x=--no-such-flag", "--no-such-flag"),
    ("x=--dtype int4", "'int4' is not one of"),
])
def test_bad_variants_say_what_to_fix(run, xlmr_dir, spec, message):
    result = run("eval", "--data", EXAMPLES / "en-zh.jsonl", "--model", xlmr_dir, "--variant", spec, code=2)
    assert message in result.output


def test_calibrate_on_the_example_set_fits_platt_and_writes_the_reports(run, xlmr_dir, tmp_path):
    out = tmp_path / "cal"
    result = run("calibrate", "--pairs", EXAMPLES / "en-zh.jsonl", "--model", xlmr_dir, "--fit-platt", "--out", out)
    assert "120 (48 relevant) over 24 queries" in result.output
    assert "min_score = " in result.output and "95% CI" in result.output
    calibration = Calibration.from_file(out / "calibration.json")
    summary = json.loads((out / "results.json").read_text())
    assert (calibration.a, calibration.b) == (summary["platt_a"], summary["platt_b"])
    assert 0 <= summary["min_score"] <= 1
    low, high = summary["confidence_intervals_95"]["f1"]
    assert low <= summary["f1"] <= high
    png(out / "pr_curve.png")
    png(out / "reliability.png")


def test_calibrate_on_a_beir_directory_needs_negatives(run, xlmr_dir, beir_dir):
    result = run("calibrate", "--pairs", beir_dir, "--model", xlmr_dir, code=1)
    assert "every pair is relevant" in result.output and "--bm25-negatives" in result.output
    result = run("calibrate", "--pairs", beir_dir, "--model", xlmr_dir, "--bm25-negatives", "4",
                 "--target-precision", "0.3")
    assert "over 6 queries" in result.output and "precision >= 0.3" in result.output
