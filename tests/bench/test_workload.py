"""What `rerankd bench` sends and how it reports: workloads, request shapes, endpoints, bounds and the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rerankd.bench import (
    DocumentStream,
    Outcome,
    Sweep,
    endpoint,
    fixed_documents,
    format_table,
    mixed_documents,
    poisson_schedule,
    read_requests,
    record_answer,
    request_body,
    summarize,
)
from rerankd.bench.outcome import PhaseResult
from rerankd.bench.sweep import level_record
from rerankd.bench.workload import generated_requests
from rerankd.errors import RerankdError


def test_mixed_documents_keep_the_benchmarks_length_profile() -> None:
    lengths = [len(d.split()) for d in mixed_documents(2000, seed=3)]
    assert min(lengths) >= 20 and max(lengths) <= 450
    short = sum(n <= 60 for n in lengths) / len(lengths)
    long = sum(n >= 250 for n in lengths) / len(lengths)
    assert 0.15 < short < 0.25 and 0.15 < long < 0.25


def test_a_document_stream_never_repeats_and_follows_its_seed() -> None:
    stream = DocumentStream(seed=1, words=150, chunk=64)
    docs = [d for _ in range(10) for d in stream.take(32)]  # several chunks
    assert len(set(docs)) == len(docs) == 320
    assert {len(d.split()) for d in docs} == {150}
    assert DocumentStream(seed=1, words=150, chunk=64).take(5) == docs[:5]
    assert DocumentStream(seed=2, words=150, chunk=64).take(5) != docs[:5]
    assert fixed_documents(3, 400, seed=0) == fixed_documents(3, 400, seed=0)


def test_generated_requests_carry_the_asked_number_of_fresh_documents() -> None:
    requests = generated_requests(4, "mixed", seed=0)
    (q1, d1), (q2, d2) = next(requests), next(requests)
    assert q1 == q2 and len(d1) == len(d2) == 4 and not set(d1) & set(d2)


def test_read_requests_takes_documents_or_texts_and_names_a_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"query": "q", "documents": ["a", "b"]}\n\n{"query": "r", "texts": ["c"]}\n')
    assert read_requests(good) == [("q", ["a", "b"]), ("r", ["c"])]
    for body in ('{"query": "q", "documents": []}', '{"documents": ["a"]}', '["q"]', "{not json"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"query": "q", "documents": ["a"]}\n' + body + "\n")
        with pytest.raises(ValueError, match=f"{bad}:2: "):
            read_requests(bad)


@pytest.mark.parametrize(("api", "path", "key"), [("cohere", "/v2/rerank", "documents"),
                                                  ("jina", "/v1/rerank", "documents"),
                                                  ("vllm", "/v1/rerank", "documents"), ("tei", "/rerank", "texts")])
def test_each_api_has_its_path_and_body(api: str, path: str, key: str) -> None:
    assert endpoint("http://127.0.0.1:8080/", api) == "http://127.0.0.1:8080" + path
    body = json.loads(request_body(api, "q", ["a", "b"], model="m").content)
    assert body[key] == ["a", "b"] and body["query"] == "q" and body["model"] == "m"


def test_a_url_with_a_path_is_the_endpoint_and_a_bad_url_is_refused() -> None:
    assert endpoint("https://gw.example/team/rerank", "tei") == "https://gw.example/team/rerank"
    for bad in ("127.0.0.1:8080", "ftp://host/x", "http://"):
        with pytest.raises(RerankdError, match="--url"):
            endpoint(bad, "cohere")


def test_a_tei_answer_is_counted_by_its_results() -> None:
    outcome = Outcome(index=0, pairs=2, scheduled=0.0, sent=0.0)
    record_answer(outcome, 200, None, b'[{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}]')
    assert outcome.results == 2 and outcome.error is None and outcome.tokens is None


def test_a_poisson_schedule_can_be_bounded_by_count() -> None:
    assert len(poisson_schedule(5.0, math.inf, seed=0, count=7)) == 7
    assert poisson_schedule(5.0, math.inf, seed=0, count=7) == poisson_schedule(5.0, 10.0, seed=0)[:7]
    with pytest.raises(ValueError, match="endless"):
        poisson_schedule(5.0, math.inf)


def test_a_sweep_needs_one_kind_of_level_and_a_bound() -> None:
    requests = generated_requests(1, 50, 0)
    with pytest.raises(RerankdError, match="not both"):
        Sweep("http://h/rerank", "tei", requests, concurrency=(1,), rates=(1.0,), count=1)
    with pytest.raises(RerankdError, match="bound"):
        Sweep("http://h/rerank", "tei", requests, concurrency=(1,))


def test_the_table_has_a_row_per_level_with_errors_by_status() -> None:
    sweep = Sweep("http://h/v2/rerank", "cohere", generated_requests(1, 50, 0), concurrency=(1, 4), count=3)
    ok = [Outcome(i, 8, 0.0, 0.0, latency=0.1 * (i + 1), status=200, tokens=800, results=8) for i in range(2)]
    refused = Outcome(2, 8, 0.0, 0.0, latency=0.01, status=429, error="busy")
    lost = Outcome(3, 8, 0.0, 0.0, exception="ReadTimeout", error="ReadTimeout: ")
    records = [level_record(sweep, 1, PhaseResult(ok, 2.0)), level_record(sweep, 4, PhaseResult([*ok, refused, lost], 2.0))]
    header, one, four = format_table("concurrency", records).splitlines()
    assert header.split() == ["concurrency", "requests", "ok", "pairs/s", "req/s", "tokens/s", "p50", "ms", "p95",
                              "ms", "p99", "ms", "errors"]
    assert one.split() == ["1", "2", "2", "8.0", "1.00", "800", "150.0", "195.0", "199.0", "-"]
    assert four.split()[:3] == ["4", "4", "2"] and four.endswith("429 x1, ReadTimeout x1")
    assert records[0]["summary"] == summarize(ok, 2.0)
