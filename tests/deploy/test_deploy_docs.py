"""docs/deploy.md and the deploy files agree with the server: setting names, log fields, paths."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest
from deploy_support import DEPLOY_DOC, ENV_NAME, REPO, ImageProcess, deploy_files
from helpers import wait_until

from rerankd.settings import SETTING_NAMES

FILES = [*deploy_files(), REPO / ".dockerignore", DEPLOY_DOC]
DOC = DEPLOY_DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_rerankd_variable_is_a_setting_of_rerankd_serve(path: Path, serve_env_names: set[str]) -> None:
    used = set(ENV_NAME.findall(path.read_text(encoding="utf-8")))
    assert used - serve_env_names == set()


def test_the_variables_are_the_settings_names_in_upper_snake() -> None:
    assert "workers" in SETTING_NAMES and "RERANKD_WORKERS" in DOC
    assert {"RERANKD_" + n.upper() for n in ("host", "port", "api_key", "cache_url", "drain_timeout")} <= set(
        ENV_NAME.findall(DOC)
    )


def test_documented_log_line_has_the_fields_the_server_writes(pod: ImageProcess) -> None:
    """The example in docs/deploy.md against a line the running server (RERANKD_JSON_LOGS=1 from the
    ConfigMap) writes for a rerank request."""
    match = re.search(r"^\{\"request_id\".*\}$", DOC, re.MULTILINE)
    assert match, "docs/deploy.md has no JSON log line example"
    documented = json.loads(match.group(0))
    request_id = uuid.uuid4().hex
    key = pod.api_keys[0]  # type: ignore[attr-defined]
    answer = httpx.post(
        pod.url + "/v1/rerank",
        json={"query": "What do giant pandas eat?", "documents": ["Pandas eat bamboo.", "Orange chicken."]},
        headers={"Authorization": f"Bearer {key}", "X-Request-Id": request_id},
        timeout=30,
    )
    assert answer.status_code == 200

    def logged() -> list[dict]:
        return [json.loads(line) for line in pod.logs().splitlines() if request_id in line and line.startswith("{")]

    # The access line is written once the response is out: poll for it.
    wait_until(lambda: bool(logged()), timeout=60, message="the request's access log line")
    lines = logged()
    assert len(lines) == 1
    real = lines[0]
    assert list(real) == list(documented)
    assert {k: type(v) for k, v in real.items()} == {k: type(v) for k, v in documented.items()}
    for field in documented:  # each field is explained in the table under the example
        assert f"`{field}`" in DOC


def test_paths_named_in_the_doc_exist() -> None:
    for path in set(re.findall(r"`((?:deploy|docs)/[\w./-]+)`", DOC)):
        assert (REPO / path).exists(), path
    for name in re.findall(r"`examples/([\w.-]+)`", DOC):
        assert (REPO / "deploy" / "k8s" / "examples" / name).exists(), name


def test_doc_says_what_was_run_for_real() -> None:
    assert "## What was run for real here and what was not" in DOC
