"""deploy/docker: what the Dockerfiles build and how the image starts, checked without a Docker engine.

The Dockerfiles are parsed (tests/deploy/deploy_support.py); their ENTRYPOINT and HEALTHCHECK are run
as local processes with the ENV the image sets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest
from deploy_support import DOCKERFILES, FAKE_MODEL, REPO, Dockerfile, DockerIgnore, ImageProcess, resolve_command
from helpers import free_port

from rerankd.settings import DEFAULT_MODEL, Settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

IDS = [p.name for p in DOCKERFILES]
PINNED_SLIM_PYTHON = re.compile(r"^python:\d+\.\d+\.\d+-slim-[a-z]+$")


@pytest.fixture(params=DOCKERFILES, ids=IDS)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return Dockerfile(request.param)


def test_images_are_multi_stage_on_a_python_slim_base_pinned_by_version(dockerfile: Dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert names == ["builder", "model", "runtime"]
    for stage in (dockerfile.stages[0], dockerfile.final):
        assert PINNED_SLIM_PYTHON.match(stage.base), stage.base
    assert dockerfile.stages[1].base == "builder"


def test_runtime_runs_as_a_non_root_user_and_listens_on_all_interfaces_at_8080(dockerfile: Dockerfile) -> None:
    user = dockerfile.last("USER")
    assert user is not None and user.rest.split(":")[0] not in ("0", "root")
    env = dockerfile.env
    assert env["RERANKD_HOST"] == "0.0.0.0"
    assert env["RERANKD_PORT"] == str(Settings().port) == "8080"
    expose = dockerfile.last("EXPOSE")
    assert expose is not None and expose.rest == env["RERANKD_PORT"]
    stop = dockerfile.last("STOPSIGNAL")
    assert stop is not None and stop.rest == "SIGTERM"


def test_entrypoint_is_exec_form_rerankd_serve_under_tini(dockerfile: Dockerfile) -> None:
    entry = dockerfile.last("ENTRYPOINT")
    assert entry is not None and entry.rest.startswith("[")  # exec form: no shell swallowing SIGTERM
    assert dockerfile.command == ["tini", "--", "rerankd", "serve"]
    assert "tini" in dockerfile.last("RUN", dockerfile.final).rest  # type: ignore[union-attr]


def test_model_is_baked_by_build_arg_and_the_image_starts_offline() -> None:
    for path in DOCKERFILES:
        plain = Dockerfile(path)
        baked = Dockerfile(path, {"MODEL": "BAAI/bge-reranker-base", "MODEL_REVISION": "2cfc18c"})
        assert plain.env["RERANKD_MODEL"] == DEFAULT_MODEL
        assert baked.env["RERANKD_MODEL"] == "BAAI/bge-reranker-base"
        assert baked.env["RERANKD_REVISION"] == "2cfc18c"
        assert plain.env["HF_HUB_OFFLINE"] == baked.env["HF_HUB_OFFLINE"] == "1"
        model_stage = baked.stages[1]
        download = model_stage.instructions[-1].rest
        assert 'rerankd download "$MODEL" --revision "$MODEL_REVISION"' in download
        assert baked.stage_env(model_stage)["HF_HOME"] == baked.env["HF_HOME"]
        copies = [i.rest for i in baked.final.instructions if i.keyword == "COPY" and "--from=model" in i.rest]
        assert len(copies) == 1 and baked.env["HF_HOME"].startswith(copies[0].split()[-1])


def test_download_command_of_the_build_is_a_real_rerankd_command() -> None:
    result = subprocess.run(resolve_command(["rerankd", "download", "--help"]), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--revision" in result.stdout


def test_cpu_image_takes_torch_from_the_cpu_wheel_index_and_installs_existing_extras() -> None:
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for path in DOCKERFILES:
        text = path.read_text()
        index = re.search(r"ARG TORCH_INDEX_URL=(\S+)", text)
        assert index is not None
        expected = "https://download.pytorch.org/whl/cpu" if path.name == "Dockerfile" else "/whl/cu"
        assert expected in index.group(1)
        assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
        installed = re.search(r'pip install "/build\[([a-z,]+)\]"', text)
        assert installed is not None and set(installed.group(1).split(",")) <= extras
    assert "[server,redis,onnx]" in DOCKERFILES[0].read_text()


def test_copied_files_exist_and_are_in_the_build_context(dockerfile: Dockerfile) -> None:
    ignore = DockerIgnore(REPO / ".dockerignore")
    sources = [s for _, parts in dockerfile.context_copies() for s in parts]
    assert sources == ["pyproject.toml", "README.md", "src"]
    for source in sources:
        path = REPO / source
        assert path.exists(), source
        assert not ignore.excluded(source), source
    # Everything the wheel is built from is sent, bytecode caches are not.
    package_files = [p.relative_to(REPO).as_posix() for p in (REPO / "src").rglob("*") if p.is_file()]
    wanted = [p for p in package_files if "__pycache__" not in p and ".egg-info" not in p]
    assert "src/rerankd/cli/serve.py" in wanted and any(p.startswith("src/rerankd/corpus/") for p in wanted)
    assert [p for p in wanted if ignore.excluded(p)] == []


def test_dockerignore_keeps_repo_weight_and_secrets_out_of_the_context() -> None:
    ignore = DockerIgnore(REPO / ".dockerignore")
    for path in [".git/config", ".venv/bin/python", "models/tiny/model.safetensors",
                 "benchmarks/.models/m3/model.safetensors", "benchmarks/RESULTS.md", "tests/conftest.py",
                 ".env", "src/rerankd/__pycache__/cli.cpython-311.pyc", "src/rerankd.egg-info/PKG-INFO",
                 ".pytest_cache/v/cache", "deploy/k8s/base/secret.example.yaml"]:
        assert ignore.excluded(path), path


def test_image_starts_with_the_baked_model_offline(pod: ImageProcess) -> None:
    """The runtime ENV with MODEL baked in: HF_HUB_OFFLINE=1, a hub id resolved from the image's cache."""
    assert pod.env["HF_HUB_OFFLINE"] == "1" and pod.env["RERANKD_MODEL"] == FAKE_MODEL
    headers = {"Authorization": f"Bearer {pod.api_keys[1]}"}  # type: ignore[attr-defined]
    info = httpx.get(pod.url + "/info", headers=headers, timeout=10).json()
    assert info["models"][0]["source"] == FAKE_MODEL and info["models"][0]["revision"] == "main"
    with httpx.Client(base_url=pod.url, timeout=30) as client:
        body = {"query": "What do giant pandas eat?", "documents": ["Pandas eat bamboo.", "Orange chicken."]}
        assert client.post("/v1/rerank", json=body).status_code == 401  # the Secret's keys are required
        answer = client.post("/v1/rerank", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["results"]) == 2


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_healthcheck_command_passes_on_a_running_server_and_fails_without_one(path: Path,
                                                                               pod: ImageProcess) -> None:
    flags, argv = Dockerfile(path).healthcheck
    assert argv[0] == "python" and "/health" in argv[-1]  # slim images have no curl; python is there
    assert float(flags["timeout"].rstrip("s")) > 4  # urlopen's own timeout must fire first
    command = resolve_command(argv)
    up = subprocess.run(command, env=pod.env, capture_output=True, timeout=30)
    assert up.returncode == 0, up.stderr
    down = subprocess.run(command, env={**pod.env, "RERANKD_PORT": str(free_port())}, capture_output=True,
                          timeout=30)
    assert down.returncode != 0

