"""A bounded schemathesis run over the live server's /openapi.json: whatever it sends, no answer is a 5xx,
and the server still scores afterwards."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from server_harness import DOCS, QUERY, ServerProcess

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

# Per operation and mode (bodies that follow the schema, and bodies that break it); the tiny model keeps
# each call cheap, so the whole run takes seconds.
EXAMPLES = 50


def test_fuzzing_the_openapi_schema_finds_no_server_error(start_server, xlmr_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server([xlmr_dir])
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/rerank" for op in operations)
    calls: dict[int, int] = {}
    server_errors: list[str] = []

    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def call(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=server.url, timeout=60)
            calls[response.status_code] = calls.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                     f"{response.text[:200]}")

        try:
            call()
        except Unsatisfiable:  # an operation that takes no input has no invalid input to send
            assert mode is GenerationMode.NEGATIVE

    print(f"schemathesis: {sum(calls.values())} calls over {len(operations)} operations in both modes, by status {calls}")
    assert not server_errors, server_errors[:5]
    assert server.returncode is None, server.logs()
    with server.client(timeout=60) as c:
        answer = c.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"]) == len(DOCS)
