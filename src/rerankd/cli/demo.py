"""`rerankd demo`: rank a built-in English and Chinese example and show where the time goes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import click

from rerankd.cli.options import MODEL_SETTINGS, setting_options
from rerankd.cli.score import preview
from rerankd.reranker import Reranker, rank_order
from rerankd.settings import Settings


@dataclass(frozen=True)
class Example:
    language: str
    query: str
    documents: tuple[str, ...]
    answer: int  # index of the document that really answers the query


# Each example hides the answer among "keyword traps": documents that share the
# query's words but don't answer it. Keyword search ranks the traps high; a
# real cross-encoder puts the answer first.
EXAMPLES = (
    Example(
        language="en",
        query="What do giant pandas eat?",
        documents=(
            "Giant pandas are a popular symbol of wildlife conservation, and the panda logo is known worldwide.",
            "Panda Express is an American fast-food chain; people eat its orange chicken across the country.",
            "The giant panda's diet is over 99% bamboo: an adult eats 12 to 38 kg of bamboo shoots, leaves "
            "and stems every day, and occasionally small animals or carrion.",
            "Red pandas are not closely related to giant pandas, although both live in the mountains of China.",
            "To eat well on a budget, plan meals for the week and buy vegetables that are in season.",
        ),
        answer=2,
    ),
    Example(
        language="zh",
        query="大熊猫主要吃什么？",
        documents=(
            "熊猫电子是一家中国电子企业，生产电视和通信设备，和大熊猫没有关系。",
            "大熊猫的食物中百分之九十九是竹子，成年大熊猫每天要吃十二到三十八公斤的竹笋、竹叶和竹竿。",
            "成都大熊猫繁育研究基地每年接待大量游客，游客主要在上午参观。",
            "小熊猫和大熊猫名字相似，但它们属于不同的科。",
        ),
        answer=1,
    ),
)


@click.command()
@setting_options(*MODEL_SETTINGS)
def demo(settings: Settings) -> None:
    """Rank a built-in English and Chinese example, with keyword-trap documents.

    Prints each ranking with its scores, marks the best match, and splits the
    time into load, tokenize and inference.
    """
    started = time.perf_counter()
    reranker = Reranker.from_settings(settings)
    loaded = reranker.loaded
    click.echo(f"model   {loaded.source}  ({loaded.kind}: {loaded.model_type}, {loaded.device}, {loaded.dtype})")
    if reranker.is_fixture:
        click.secho(
            "NOTE    this is a random-weight test fixture made by `rerankd make-test-model`: "
            "the scores below are NOT relevance, and the order means nothing.",
            fg="yellow",
        )
    tokenize = inference = 0.0
    for example in EXAMPLES:
        report = reranker.score_query(example.query, example.documents)
        tokenize += report.tokenize_seconds
        inference += report.inference_seconds
        scores = report.scores()
        click.echo(f"\nquery [{example.language}]  {example.query}")
        click.echo("  rank  score     doc")
        for rank, i in enumerate(rank_order(scores), start=1):
            mark = "*" if rank == 1 else " "
            tag = "  <- the answer" if i == example.answer else ""
            click.echo(f"  {rank:>3} {mark} {scores[i]:.4f}  [{i}] {preview(example.documents[i], 64)}{tag}")
        click.echo("  (* best match)")
    total = time.perf_counter() - started
    click.echo(
        f"\ntime    load {loaded.load_seconds * 1000:.1f} ms | tokenize {tokenize * 1000:.1f} ms | "
        f"inference {inference * 1000:.1f} ms | total {total * 1000:.1f} ms"
    )
