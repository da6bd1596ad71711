"""Fixtures for the deploy tests: what the server really offers (routes, settings, metrics), and the
image's entrypoint started as a local process with the environment a Kubernetes pod would give it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from deploy_support import (
    DOCKERFILES,
    FAKE_MODEL,
    K8S,
    Dockerfile,
    ImageProcess,
    fake_hub_cache,
    find,
    image_env,
    load_yaml_docs,
)

from rerankd.settings import SETTING_NAMES, Settings


@pytest.fixture(scope="session")
def serve_env_names() -> set[str]:
    """Every RERANKD_* variable `rerankd serve` reads (its own options and the group's --log-level)."""
    from rerankd.cli.main import cli

    serve = cli.commands["serve"]
    names = {p.envvar for p in [*cli.params, *serve.params] if isinstance(p.envvar, str)}
    assert {"RERANKD_" + n.upper() for n in SETTING_NAMES} <= names
    return names


@pytest.fixture(scope="session")
def app_get() -> Callable[[str], int]:
    """`app_get(path)`: the status the real FastAPI app answers to GET path, called in process over ASGI
    with no model loaded (the lifespan never runs): /health 200, /ready 503 while loading, 404 for a
    path that is no route."""
    from rerankd.server.app import create_app
    from rerankd.server.metrics import Metrics
    from rerankd.server.models import ModelRegistry

    settings = Settings(model=FAKE_MODEL)
    metrics = Metrics()
    app = create_app(settings, ModelRegistry(settings, [(FAKE_MODEL, FAKE_MODEL)], metrics), metrics)

    async def get(path: str) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return (await client.get(path)).status_code

    return lambda path: asyncio.run(get(path))


@pytest.fixture(scope="session")
def metric_names() -> set[str]:
    """Names of the Prometheus series the server exports (families and their samples)."""
    from rerankd.server.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


@pytest.fixture(scope="session")
def hf_home(xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Hugging Face cache a `--build-arg MODEL=rerankd-test/tiny-reranker` build would bake in."""
    home = tmp_path_factory.mktemp("hf-home")
    fake_hub_cache(xlmr_dir, home, FAKE_MODEL)
    return home


@pytest.fixture(scope="session")
def pod(hf_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageProcess]:
    """The CPU image as the k8s base runs it: image ENV (built with MODEL=FAKE_MODEL), then the
    ConfigMap and the example Secret through envFrom. The ConfigMap names the model the real image
    was built with, so RERANKD_MODEL is pointed back at the fake one."""
    dockerfile = Dockerfile(DOCKERFILES[0], {"MODEL": FAKE_MODEL})
    configmap = find(load_yaml_docs(K8S / "base" / "configmap.yaml"), "ConfigMap")[0]["data"]
    secret = load_yaml_docs(K8S / "base" / "secret.example.yaml")[0]["stringData"]
    env = image_env(dockerfile, hf_home, configmap, secret, {"RERANKD_MODEL": FAKE_MODEL})
    process = ImageProcess(dockerfile.command, env, tmp_path_factory.mktemp("pod") / "pod.log")
    process.api_keys = secret["RERANKD_API_KEY"].split(",")  # type: ignore[attr-defined]
    try:
        yield process.start()
        process.terminate(timeout=20)  # SIGTERM, forwarded by tini where it runs: the server drains and exits
    finally:
        process.kill()
