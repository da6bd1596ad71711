"""`rerankd eval`: rerank a first stage's candidates on labelled data and compare configurations."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from rerankd.cli.options import option, setting_options
from rerankd.cli.variants import SCORE_SETTINGS, parse_variant
from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import Settings

FIXTURE_NOTE = (
    "NOTE    a random-weight test fixture made by `rerankd make-test-model` is among the models: its scores are "
    "NOT relevance, and its metrics mean nothing."
)


def data_options(command: click.Command) -> click.Command:
    """The options `eval` and `calibrate` share: where the data is and what counts as relevant."""
    for decorator in reversed([
        option("--split", default="test", show_default=True,
               help="BEIR directories: the qrels file to read, qrels/SPLIT.tsv."),
        option("--relevant-min", type=click.IntRange(min=1), default=1, show_default=True,
               help="Graded labels: a pair is relevant when its label is at least this."),
    ]):
        command = decorator(command)
    return command


@click.command("eval")
@option("--data", required=True, type=click.Path(exists=True, path_type=Path), metavar="DIR|FILE",
        help="A BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), or JSON lines of "
        "{query, positives, negatives}, {query, candidates: [{text, label}]} or {query, document, label}.")
@data_options
@option("--variant", "variants", multiple=True, metavar="NAME=FLAGS",
        help="Also rerank with these flags of `rerankd score` changed, for example int8=\"--dtype int8\" "
        "(repeatable). Each is compared with the first configuration, the one the other flags give.")
@option("--base-name", default="base", show_default=True, help="Name of the configuration the flags give.")
@option("--first-stage", type=click.Choice(["bm25"]), default="bm25", show_default=True,
        help="Where the candidates come from: BM25 over the corpus (CJK text split into characters and bigrams).")
@option("--run", "run_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="RUN_FILE",
        help="Take the candidates from this TREC run file of your own retriever instead of --first-stage.")
@option("--top-k", type=click.IntRange(min=1), default=100, show_default=True,
        help="Candidates reranked per query. Recall@k can't change by reranking, so keep k above 20.")
@option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
        help="Write results.json, a TREC run file per system and report.png here.")
@setting_options(*SCORE_SETTINGS)
def eval_command(
    data: Path,
    split: str,
    relevant_min: int,
    variants: tuple[str, ...],
    base_name: str,
    first_stage: str,
    run_file: Path | None,
    top_k: int,
    out: Path | None,
    settings: Settings,
) -> None:
    """Measure ranking quality on your labelled data: the first stage, then each configuration reranking it.

    Prints nDCG@10, MRR@10 and Recall@10/20 (ir-measures) and pairs/s per configuration, and, against
    the first configuration, the share of queries whose top 10 changed and the p-value of a paired
    t-test on the per-query nDCG@10. A progress bar runs on stderr.
    """
    from rerankd.evaluation.data import load_dataset
    from rerankd.evaluation.experiment import Variant, results, run_experiment, write_outputs
    from rerankd.evaluation.first_stage import bm25_run, read_run

    configs = [Variant(base_name, settings)]
    for spec in variants:
        name, changed, flags = parse_variant(spec, settings)
        configs.append(Variant(name, changed, flags))
    stage_name = "run" if run_file else first_stage
    names = [stage_name, *(v.name for v in configs)]
    if len(set(names)) != len(names):
        raise click.BadParameter(f"names must differ, got {', '.join(names)}", param_hint="--variant")

    dataset = load_dataset(data, split)
    qrels = dataset.relevant(relevant_min)
    if not qrels:
        raise RerankdError(ErrorKind.INVALID_INPUT,
                           f"no query in {data} has a document labelled {relevant_min} or more (--relevant-min)")
    query_ids = list(qrels)
    candidates = read_run(run_file, dataset, query_ids, top_k) if run_file else bm25_run(dataset, query_ids, top_k)
    pairs = sum(len(docs) for docs in candidates.values())
    click.echo(f"data    {data}: {len(query_ids)} queries with a relevant document, {len(dataset.corpus)} documents; "
               f"{pairs} candidates from {run_file or first_stage} (top {top_k})", err=True)
    if top_k <= 20:
        fixed = "R@10 and R@20" if top_k <= 10 else "R@20"
        click.echo(f"note    reranking the top {top_k} can't change recall at depth {top_k} or more: {fixed} stay "
                   "the first stage's", err=True)

    with tqdm(total=pairs * len(configs), unit="pair", file=sys.stderr, desc="reranking") as bar:
        systems = run_experiment(dataset, qrels, (stage_name, candidates), configs, on_batch=bar.update,
                                 on_variant=lambda v: bar.set_description(v.name))
    summary = results(systems, {"data": str(data), "queries": len(query_ids), "documents": len(dataset.corpus),
                                "first_stage": str(run_file or first_stage), "top_k": top_k,
                                "relevant_min": relevant_min})
    if any(s.is_fixture for s in systems):
        click.secho(FIXTURE_NOTE, fg="yellow")
    click.echo(format_table(summary))
    if out is not None:
        write_outputs(out, systems, summary)
        click.echo(f"\nwrote   {out}/results.json, {out}/report.png and a run file per system")


def format_table(summary: dict) -> str:
    """The terminal table: one row per system."""
    measures = summary["measures"]
    head = f"{'system':<16}" + "".join(f"{m:>9}" for m in measures) + f"{'pairs/s':>10}{'top-10 chg':>12}"
    head += f"{'p nDCG@10':>11}"
    lines = [head, "-" * len(head)]
    for row in summary["systems"]:
        line = f"{row['name']:<16}" + "".join(f"{row['metrics'][m]:>9.4f}" for m in measures)
        line += f"{row['pairs_per_second']:>10.1f}" if "pairs_per_second" in row else f"{'':>10}"
        versus = row.get("vs_first_variant")
        if versus is not None:
            p = versus["ttest_rel"]["nDCG@10"]["p"]
            line += f"{versus['top10_changed']:>12.0%}" + (f"{p:>11.3f}" if p is not None else f"{'n/a':>11}")
        lines.append(line)
    return "\n".join(lines)
