"""Labelled data for `rerankd eval` and `rerankd calibrate`: a BEIR directory or a JSON-lines file.

Both become one `Dataset`: queries, a corpus and graded judgments (qrels) keyed by id, the shape
ir-measures and TREC run files use. JSON-lines files have no ids, so queries are numbered q1, q2, ...
(or take an `id` field) and distinct passages d1, d2, ... in the order they first appear.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankd.errors import ErrorKind, RerankdError

JSONL_SHAPES = (
    '{"query", "positives": [text], "negatives": [text]}, {"query", "candidates": [{"text", "label"}]} '
    'or {"query", "document", "label"}'
)


@dataclass
class Dataset:
    queries: dict[str, str] = field(default_factory=dict)
    corpus: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # query id -> document id -> grade

    def relevant(self, relevant_min: int) -> dict[str, dict[str, int]]:
        """The judgments of queries with at least one relevant document, grades below `relevant_min` as 0.

        nDCG keeps the grades as gains; RR and Recall count any grade above 0 as relevant.
        """
        graded = {
            qid: {doc: grade if grade >= relevant_min else 0 for doc, grade in docs.items()}
            for qid, docs in self.qrels.items()
        }
        return {qid: docs for qid, docs in graded.items() if any(docs.values())}

    def judged_pairs(self) -> list[tuple[str, str, int]]:
        """(query id, document id, grade) of every judgment."""
        return [(qid, doc, grade) for qid, docs in self.qrels.items() for doc, grade in docs.items()]


def load_dataset(path: str | Path, split: str = "test") -> Dataset:
    """A BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or a JSON-lines file."""
    path = Path(path)
    if path.is_dir():
        return _load_beir(path, split)
    if path.is_file():
        return _load_jsonl(path)
    raise _invalid(f"{path}: no such file or directory")


def _invalid(message: str) -> RerankdError:
    return RerankdError(ErrorKind.INVALID_INPUT, message)


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                record = json.loads(line)
            except UnicodeDecodeError as exc:
                raise _invalid(f"{path}:{number}: not valid UTF-8 ({exc.reason})") from None
            except json.JSONDecodeError as exc:
                raise _invalid(f"{path}:{number}: not valid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(record, dict):
                raise _invalid(f"{path}:{number}: expected a JSON object")
            yield number, record


def _text(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"{where}: {key!r} must be a non-empty string")
    return value


def _grade(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise _invalid(f"{where}: a label must be a whole number 0 or more (0: not relevant), got {value!r}")
    return int(value)


def _load_beir(directory: Path, split: str) -> Dataset:
    files = {name: directory / name for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv")}
    missing = [name for name, file in files.items() if not file.is_file()]
    if missing:
        raise _invalid(f"{directory} is not a BEIR directory: {', '.join(missing)} missing")
    data = Dataset()
    for number, record in _json_lines(files["corpus.jsonl"]):
        where = f"{files['corpus.jsonl']}:{number}"
        # BEIR's own convention: the title, a space, the text.
        text = f"{record.get('title') or ''} {record.get('text') or ''}".strip()
        if not text:
            raise _invalid(f"{where}: the document has no 'title' or 'text'")
        data.corpus[str(record.get("_id", ""))] = text
    for number, record in _json_lines(files["queries.jsonl"]):
        data.queries[str(record.get("_id", ""))] = _text(record, "text", f"{files['queries.jsonl']}:{number}")
    qrels_file = files[f"qrels/{split}.tsv"]
    with qrels_file.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t"))
    for number, row in enumerate(rows, start=1):
        if number == 1 and row and not row[-1].strip().lstrip("-").isdigit():
            continue  # the header: query-id, corpus-id, score
        if len(row) != 3:
            raise _invalid(f"{qrels_file}:{number}: expected query-id, corpus-id and score separated by tabs")
        qid, doc, score = row
        where = f"{qrels_file}:{number}"
        if qid not in data.queries or doc not in data.corpus:
            raise _invalid(f"{where}: {'query' if qid not in data.queries else 'document'} "
                           f"{qid if qid not in data.queries else doc!r} is not in the "
                           f"{'queries' if qid not in data.queries else 'corpus'}")
        try:
            data.qrels.setdefault(qid, {})[doc] = _grade(int(score), where)
        except ValueError:
            raise _invalid(f"{where}: the score must be a whole number, got {score!r}") from None
    return data


def _load_jsonl(path: Path) -> Dataset:
    data = Dataset()
    doc_ids: dict[str, str] = {}
    query_ids: dict[str, str] = {}

    def doc_id(text: str) -> str:
        if text not in doc_ids:
            doc_ids[text] = f"d{len(doc_ids) + 1}"
            data.corpus[doc_ids[text]] = text
        return doc_ids[text]

    for number, record in _json_lines(path):
        where = f"{path}:{number}"
        query = _text(record, "query", where)
        if query not in query_ids:
            query_ids[query] = str(record.get("id") or f"q{len(query_ids) + 1}")
            data.queries[query_ids[query]] = query
        judged = data.qrels.setdefault(query_ids[query], {})
        if "document" in record:
            judged[doc_id(_text(record, "document", where))] = _grade(record.get("label"), where)
        elif "candidates" in record:
            candidates = record["candidates"]
            if not isinstance(candidates, list):
                raise _invalid(f"{where}: 'candidates' must be a list of {{text, label}}")
            for i, candidate in enumerate(candidates):
                if not isinstance(candidate, dict):
                    raise _invalid(f"{where}: candidates[{i}] must be an object {{text, label}}")
                judged[doc_id(_text(candidate, "text", f"{where}: candidates[{i}]"))] = _grade(
                    candidate.get("label"), f"{where}: candidates[{i}]"
                )
        elif "positives" in record or "negatives" in record:
            for key, grade in (("positives", 1), ("negatives", 0)):
                texts = record.get(key, [])
                if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
                    raise _invalid(f"{where}: {key!r} must be a list of non-empty strings")
                for text in texts:
                    judged[doc_id(text)] = grade
        else:
            raise _invalid(f"{where}: expected one of {JSONL_SHAPES}")
    if not data.queries:
        raise _invalid(f"{path} holds no queries; expected JSON lines of {JSONL_SHAPES}")
    return data
