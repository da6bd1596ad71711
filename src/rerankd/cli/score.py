"""`rerankd score` for a quick check and `rerankd rerank` for files of documents."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import click
from tqdm import tqdm

from rerankd.cli.options import MODEL_SETTINGS, option, setting_options
from rerankd.reranker import Reranker, ScoreReport, above_min_score, rank_order
from rerankd.settings import Settings

# Below this many documents a progress bar is more noise than help.
PROGRESS_MIN_DOCUMENTS = 64


def preview(text: str, width: int = 72) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@click.command()
@click.argument("query")
@click.argument("documents", nargs=-1, required=True)
@option("--json", "as_json", is_flag=True, help='Print [{"index", "score"}] as JSON.')
@option("--raw", is_flag=True, help="Print raw logits instead of sigmoid scores in 0..1.")
@setting_options(*MODEL_SETTINGS)
def score(query: str, documents: tuple[str, ...], as_json: bool, raw: bool, settings: Settings) -> None:
    """Print the score of each DOCUMENT for QUERY, in input order."""
    reranker = Reranker.from_settings(settings)
    report = reranker.score_query(query, documents)
    scores = report.scores(normalize=not raw)
    if as_json:
        click.echo(json.dumps([{"index": i, "score": s, **chunk_fields(report, i)} for i, s in enumerate(scores)]))
        return
    for i, (value, doc) in enumerate(zip(scores, documents, strict=True)):
        where = ""
        if report.chunks:
            best = report.chunks[i].highlight
            where = f"  ({report.chunks[i].chunks} windows, best [{best.start}:{best.end}])"
            doc = doc[best.start:best.end]
        click.echo((f"[{i}] {value:+.6f}  " if raw else f"[{i}] {value:.6f}  ") + preview(doc) + where)


def chunk_fields(report: ScoreReport, i: int) -> dict[str, Any]:
    """`chunks` and `highlight` of document `i` when it was chunked, else nothing."""
    if report.chunks is None:
        return {}
    best = report.chunks[i].highlight
    return {"chunks": report.chunks[i].chunks, "highlight": {"start": best.start, "end": best.end}}


@dataclass
class InputDocument:
    line: int
    text: str
    record: Any


def read_documents(stream: IO[bytes], fmt: str, text_field: str) -> Iterator[InputDocument]:
    """Documents from plain lines or JSON lines (a string, or an object with `text_field`); blank lines skipped."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise click.ClickException(
                f"input line {number} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
        if not line.strip():
            continue
        if fmt == "auto":
            fmt = "jsonl" if line.lstrip().startswith(("{", '"')) else "text"
        if fmt == "text":
            yield InputDocument(number, line, line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"input line {number} is not valid JSON: {exc.msg} (column {exc.colno})") from None
        if isinstance(record, str):
            yield InputDocument(number, record, record)
        elif isinstance(record, dict) and isinstance(record.get(text_field), str):
            yield InputDocument(number, record[text_field], record)
        else:
            raise click.ClickException(
                f"input line {number}: expected a JSON string or an object with a string {text_field!r} field"
            )


@click.command("rerank")
@option("--query", "-q", required=True, help="The query to rank the documents for.")
@option("--input", "-i", "input_file", type=click.File("rb"), default="-", show_default=True,
        help="Documents: one per line, as plain text or JSON lines.")
@option("--output", "-o", "output_file", type=click.File("w", encoding="utf-8"), default="-", show_default=True,
        help="Where to write the ranking as JSON lines.")
@option("--format", "fmt", type=click.Choice(["auto", "text", "jsonl"]), default="auto", show_default=True,
        help="Input format; auto reads JSON lines when the first line starts with { or \".")
@option("--text-field", default="text", show_default=True, help="Field holding the text in JSON objects.")
@option("--top-n", type=click.IntRange(min=0), default=0, help="Write only the best N (0: all).")
@option("--raw", is_flag=True, help="Write raw logits instead of sigmoid scores.")
@setting_options(*MODEL_SETTINGS, "min_score")
def rerank_file(
    query: str,
    input_file: IO[bytes],
    output_file: IO[str],
    fmt: str,
    text_field: str,
    top_n: int,
    raw: bool,
    settings: Settings,
) -> None:
    """Rank the documents of a file for QUERY and write JSON lines, best first.

    Each output line is {"rank", "index", "line", "score", "document"}, where "document"
    is the input line's text or JSON value; with --truncation chunk, also "chunks" (windows scored)
    and "highlight" ({"start", "end"}: the best window's characters in the document's text). A progress bar shows on stderr for long inputs.
    """
    documents = list(read_documents(input_file, fmt, text_field))
    reranker = Reranker.from_settings(settings)
    texts = [d.text for d in documents]
    chunked = settings.truncation == "chunk"
    with tqdm(
        total=None if chunked else len(texts),  # chunk: the bar counts windows, not known in advance
        unit="window" if chunked else "doc",
        file=sys.stderr,
        disable=len(texts) < PROGRESS_MIN_DOCUMENTS,
        desc="reranking",
    ) as bar:
        report = reranker.score_query(query, texts, on_batch=bar.update)
    scores = report.scores(normalize=not raw)
    order = above_min_score(rank_order(report.logits.tolist(), top_n), report.scores(), settings.min_score)
    for rank, i in enumerate(order, start=1):
        record = {"rank": rank, "index": i, "line": documents[i].line, "score": scores[i],
                  **chunk_fields(report, i), "document": documents[i].record}
        output_file.write(json.dumps(record, ensure_ascii=False) + "\n")
