"""Reading evaluation data (BEIR and JSON lines), the CJK-aware BM25 first stage, and run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankd.errors import RerankdError
from rerankd.evaluation.data import load_dataset
from rerankd.evaluation.first_stage import bm25_run, read_run, split_words, write_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def judged_texts(path: Path) -> dict[str, dict[str, int]]:
    data = load_dataset(path)
    return {data.queries[q]: {data.corpus[d]: g for d, g in docs.items()} for q, docs in data.qrels.items()}


def test_the_three_json_lines_shapes_read_the_same(tmp_path: Path) -> None:
    pos_neg = write_lines(tmp_path / "a.jsonl", [{"query": "q", "positives": ["p"], "negatives": ["n1", "n2"]}])
    candidates = write_lines(tmp_path / "b.jsonl", [
        {"query": "q", "candidates": [{"text": "p", "label": 1}, {"text": "n1", "label": 0}, {"text": "n2", "label": 0}]}
    ])
    pairs = write_lines(tmp_path / "c.jsonl", [{"query": "q", "document": t, "label": g}
                                               for t, g in [("p", 1), ("n1", 0), ("n2", 0)]])
    expected = {"q": {"p": 1, "n1": 0, "n2": 0}}
    assert judged_texts(pos_neg) == judged_texts(candidates) == judged_texts(pairs) == expected


def test_the_example_set_is_the_same_in_both_formats() -> None:
    beir, jsonl = load_dataset(EXAMPLES / "beir"), load_dataset(EXAMPLES / "en-zh.jsonl")
    assert judged_texts(EXAMPLES / "beir") == judged_texts(EXAMPLES / "en-zh.jsonl")
    assert 20 <= len(beir.queries) == len(jsonl.queries) <= 30
    chinese = [q for q in jsonl.queries.values() if any("\u4e00" <= c <= "\u9fff" for c in q)]
    assert 0 < len(chinese) < len(jsonl.queries)


def test_graded_labels_count_from_relevant_min(tmp_path: Path) -> None:
    data = load_dataset(write_lines(tmp_path / "g.jsonl", [
        {"query": "q1", "candidates": [{"text": "a", "label": 2}, {"text": "b", "label": 1}]},
        {"query": "q2", "candidates": [{"text": "c", "label": 1}]},
    ]))
    assert data.relevant(2) == {"q1": {"d1": 2, "d2": 0}}  # q2 has nothing relevant at 2: left out
    assert data.relevant(1) == {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}


@pytest.mark.parametrize(("record", "message"), [
    ({"query": "q"}, "expected one of"),
    ({"query": "", "positives": ["p"]}, "'query' must be a non-empty string"),
    ({"query": "q", "document": "d", "label": -1}, "a label must be a whole number 0 or more"),
    ({"query": "q", "document": "d", "label": "yes"}, "a label must be a whole number"),
    ({"query": "q", "positives": "p"}, "'positives' must be a list"),
])
def test_bad_lines_name_the_line_and_the_fix(tmp_path: Path, record: dict, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [{"query": "ok", "document": "d", "label": 1}, record])
    with pytest.raises(RerankdError, match=message) as error:
        load_dataset(path)
    assert "bad.jsonl:2" in error.value.message


def test_an_incomplete_beir_directory_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(RerankdError, match=r"not a BEIR directory: queries.jsonl, qrels/test.tsv missing"):
        load_dataset(tmp_path)


def test_chinese_is_split_into_characters_and_bigrams() -> None:
    assert split_words("大熊猫吃竹子 Giant pandas") == [
        "大", "熊", "猫", "吃", "竹", "子", "大熊", "熊猫", "猫吃", "吃竹", "竹子", "Giant", "pandas"
    ]


def test_bm25_finds_chinese_and_english_answers_by_their_words() -> None:
    data = load_dataset(EXAMPLES / "en-zh.jsonl")
    qids = [q for q, text in data.queries.items() if text in ("长城有多长？", "Who wrote the novel Pride and Prejudice?")]
    run = bm25_run(data, qids, k=3)
    for qid in qids:
        assert len(run[qid]) == 3
        best = max(run[qid], key=run[qid].get)
        assert best in data.qrels[qid]  # a document judged for this query (a positive or a keyword trap)


def test_run_files_round_trip_and_keep_the_best_k(tmp_path: Path) -> None:
    data = load_dataset(write_lines(tmp_path / "d.jsonl", [{"query": "q", "positives": ["a", "b", "c"]}]))
    write_run(tmp_path / "run.trec", {"q1": {"d1": 0.5, "d2": 2.0, "d3": 1.0}}, "mine")
    assert (tmp_path / "run.trec").read_text().splitlines()[0] == "q1 Q0 d2 1 2 mine"
    assert read_run(tmp_path / "run.trec", data, ["q1"], k=2) == {"q1": {"d2": 2.0, "d3": 1.0}}
    (tmp_path / "bad.trec").write_text("q1 Q0 nope 1 1.0 x\n")
    with pytest.raises(RerankdError, match="document 'nope'"):
        read_run(tmp_path / "bad.trec", data, ["q1"], k=2)
