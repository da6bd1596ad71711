"""The library's and the CLI's min_score and calibration: the same rule as the server's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rerankd import Reranker
from rerankd.cli.main import cli
from rerankd.engine.calibration import Calibration, calibration_files
from rerankd.errors import RerankdError

QUERY = "What do giant pandas eat?"
DOCS = ["bamboo shoots and leaves", "Panda Express orange chicken", "大熊猫吃竹子", "red pandas eat fruit", "weather"]


def cut_keeping(scores: list[float], kept: int) -> float:
    ranked = sorted(scores, reverse=True)
    return (ranked[kept - 1] + ranked[kept]) / 2


def test_rerank_drops_results_below_min_score_after_top_n(reranker: Reranker) -> None:
    scores = reranker.compute_score([(QUERY, d) for d in DOCS])
    best = sorted(range(len(DOCS)), key=lambda i: -scores[i])
    results = reranker.rerank(QUERY, DOCS, min_score=cut_keeping(scores, 2))
    assert [r.index for r in results] == best[:2]
    assert [r.index for r in reranker.rerank(QUERY, DOCS, top_n=1, min_score=cut_keeping(scores, 3))] == best[:1]
    # With raw logits the threshold still applies to the 0..1 score.
    raw = reranker.rerank(QUERY, DOCS, normalize=False, min_score=cut_keeping(scores, 2))
    assert [r.index for r in raw] == best[:2] and raw[0].score == pytest.approx(
        reranker.compute_score([(QUERY, DOCS[best[0]])], normalize=False)[0], abs=1e-6)
    with pytest.raises(RerankdError, match="min_score is a relevance score in 0..1"):
        reranker.rerank(QUERY, DOCS, min_score=2)


def test_a_calibration_file_makes_scores_its_probabilities(xlmr_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(Calibration(0.5, 1.0, "x").to_json(), encoding="utf-8")
    calibrated = Reranker(str(xlmr_dir), device="cpu", calibration=str(path))
    logits = np.array(reranker.compute_score([(QUERY, d) for d in DOCS], normalize=False))
    expected = 1 / (1 + np.exp(-(0.5 * logits + 1.0)))
    assert calibrated.compute_score([(QUERY, d) for d in DOCS]) == pytest.approx(expected.tolist(), abs=1e-6)
    assert calibrated.compute_score([(QUERY, DOCS[0])], normalize=False)[0] == pytest.approx(logits[0], abs=1e-6)
    assert [r.index for r in calibrated.rerank(QUERY, DOCS)] == [r.index for r in reranker.rerank(QUERY, DOCS)]
    # Chunk mode too: a document that fits is one window, scored on the calibrated scale.
    chunked = calibrated.compute_score([(QUERY, d) for d in DOCS], truncation="chunk")
    assert chunked == pytest.approx(expected.tolist(), abs=1e-6)


def test_calibration_entries_map_to_served_models(tmp_path: Path) -> None:
    assert calibration_files(["c.json"], ["only"]) == {"only": "c.json"}
    assert calibration_files(["b=c.json"], ["a", "b"]) == {"b": "c.json"}
    with pytest.raises(RerankdError, match="expected NAME=FILE"):
        calibration_files(["c.json"], ["a", "b"])
    with pytest.raises(RerankdError, match="names model 'b' twice"):
        calibration_files(["b=c.json", "b=d.json"], ["a", "b"])
    path = tmp_path / "negative.json"
    path.write_text(json.dumps({"format": "rerankd-calibration/1", "a": -1.0, "b": 0.0}))
    with pytest.raises(RerankdError, match="'a' >= 0"):
        Calibration.from_file(path)


def test_cli_rerank_takes_min_score(xlmr_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    scores = reranker.compute_score([(QUERY, d) for d in DOCS])
    (tmp_path / "docs.txt").write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["rerank", "--model", str(xlmr_dir), "-q", QUERY, "-i", str(tmp_path / "docs.txt"),
                                      "--min-score", str(cut_keeping(scores, 3))])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in rows] == sorted(range(len(DOCS)), key=lambda i: -scores[i])[:3]
