"""`rerankd calibrate`: a score threshold from labelled pairs, and optionally a Platt calibration."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from rerankd.cli.eval import FIXTURE_NOTE, data_options
from rerankd.cli.options import option, setting_options
from rerankd.cli.variants import SCORE_SETTINGS
from rerankd.engine.calibration import Calibration
from rerankd.errors import ErrorKind, RerankdError
from rerankd.reranker import Reranker
from rerankd.settings import Settings


@click.command()
@option("--pairs", "data", required=True, type=click.Path(exists=True, path_type=Path), metavar="FILE|DIR",
        help="JSON lines of {query, document, label} (0/1 or graded), or any data `rerankd eval` reads.")
@data_options
@option("--target-precision", type=click.FloatRange(0, 1, min_open=True), metavar="P",
        help="Pick the threshold reaching this precision with the best recall, instead of the best F1.")
@option("--fit-platt", "platt", is_flag=True,
        help="Fit a Platt scaling of the logits and write OUT/calibration.json, for `serve --calibration`; the "
        "threshold is then on the calibrated score.")
@option("--bm25-negatives", type=click.IntRange(min=0), default=0, show_default=True, metavar="K",
        help="Also count each query's top K BM25 documents that carry no label as not relevant (for BEIR qrels, "
        "which list only relevant documents).")
@option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
        help="Write results.json, pr_curve.png, reliability.png (and calibration.json) here.")
@setting_options(*SCORE_SETTINGS)
def calibrate(
    data: Path,
    split: str,
    relevant_min: int,
    target_precision: float | None,
    platt: bool,
    bm25_negatives: int,
    out: Path | None,
    settings: Settings,
) -> None:
    """Fit a relevance-score threshold (the server's min_score) on labelled pairs.

    Scores every pair, then picks the threshold of best F1, or of best recall at --target-precision, and
    prints its precision, recall and F1 with 95% bootstrap intervals (resampling queries). The threshold
    is on the relevance score the server compares min_score with: the sigmoid of the logit, or the
    calibrated probability with --fit-platt or --calibration.
    """
    from rerankd.evaluation.data import load_dataset
    from rerankd.evaluation.first_stage import bm25_run
    from rerankd.evaluation.plots import precision_recall_plot, reliability_plot
    from rerankd.evaluation.thresholds import all_cuts, best_cut, confidence_intervals, fit_platt, reliability

    if platt and out is None:
        raise click.UsageError("--fit-platt writes calibration.json under --out DIR; give one")
    dataset = load_dataset(data, split)
    judged = {qid: dict(docs) for qid, docs in dataset.qrels.items()}
    if bm25_negatives:
        for qid, docs in bm25_run(dataset, list(judged), bm25_negatives).items():
            for doc in docs:
                judged[qid].setdefault(doc, 0)
    pairs = [(qid, doc, grade >= relevant_min) for qid, docs in judged.items() for doc, grade in docs.items()]
    relevant = np.array([r for _, _, r in pairs], dtype=bool)
    if relevant.all() or not relevant.any():
        raise RerankdError(
            ErrorKind.INVALID_INPUT,
            f"{data}: {'every pair is relevant' if relevant.all() else 'no pair is relevant'} at --relevant-min "
            f"{relevant_min}; a threshold needs both kinds (BEIR qrels: add --bm25-negatives 10)",
        )

    reranker = Reranker.from_settings(settings)
    logits = np.empty(len(pairs))
    with tqdm(total=len(pairs), unit="pair", file=sys.stderr, desc="scoring", disable=len(pairs) < 64) as bar:
        start = 0
        for qid, docs in judged.items():
            texts = [dataset.corpus[d] for d in docs]
            logits[start : start + len(texts)] = reranker.score_query(dataset.queries[qid], texts,
                                                                      on_batch=bar.update).logits
            start += len(texts)
    groups = np.array([qid for qid, _, _ in pairs])

    calibration = Calibration(*fit_platt(logits, relevant), source="fitted") if platt else reranker.calibration
    scores = calibration.relevance(logits)
    cuts = all_cuts(scores, relevant)
    cut = best_cut(cuts, target_precision)
    intervals = confidence_intervals(scores, relevant, groups, cut.threshold)

    if reranker.is_fixture:
        click.secho(FIXTURE_NOTE, fg="yellow")
    scale = "calibrated probability" if calibration.source else "sigmoid of the logit"
    goal = f"best recall at precision >= {target_precision:g}" if target_precision else "best F1"
    click.echo(f"pairs      {len(pairs)} ({int(relevant.sum())} relevant) over {len(judged)} queries")
    click.echo(f"threshold  min_score = {cut.threshold:.4f}  ({goal}; on the {scale}); keeps {cut.kept} pairs")
    for name in ("precision", "recall", "f1"):
        low, high = intervals[name]
        click.echo(f"  {name:<9} {getattr(cut, name):.3f}  (95% CI {low:.3f} - {high:.3f})")
    sigmoid_curve = reliability(Calibration().relevance(logits), relevant)
    curves = {"sigmoid": sigmoid_curve}
    summary = {"data": str(data), "model": settings.model, "pairs": len(pairs), "relevant": int(relevant.sum()),
               "queries": len(judged), "score": scale, "goal": goal, "min_score": cut.threshold,
               "precision": cut.precision, "recall": cut.recall, "f1": cut.f1, "kept": cut.kept,
               "confidence_intervals_95": intervals, "ece_sigmoid": sigmoid_curve[2]}
    if calibration.source:
        calibrated_curve = reliability(scores, relevant)
        curves["calibrated" if platt else "--calibration"] = calibrated_curve
        summary["ece_calibrated"] = calibrated_curve[2]
        click.echo(f"calibration  ECE {sigmoid_curve[2]:.3f} with the sigmoid, {calibrated_curve[2]:.3f} calibrated")
    if platt:
        summary.update(platt_a=calibration.a, platt_b=calibration.b)
        click.echo(f"platt      a = {calibration.a:.4f}, b = {calibration.b:.4f}")
        if calibration.a == 0:
            click.secho("WARNING    the fitted slope is 0: on this data the scores say nothing about relevance, "
                        "so every calibrated score is the same", fg="yellow")
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    if platt:
        (out / "calibration.json").write_text(
            calibration.to_json(model=settings.model, pairs=len(pairs), relevant=int(relevant.sum()),
                                min_score=cut.threshold), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    precision_recall_plot(out / "pr_curve.png", cuts.precision, cuts.recall, (cut.precision, cut.recall),
                          f"Precision-recall ({scale})")
    reliability_plot(out / "reliability.png", {name: curve[:2] for name, curve in curves.items()})
    click.echo(f"wrote      {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")
