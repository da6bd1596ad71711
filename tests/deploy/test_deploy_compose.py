"""deploy/compose and deploy/prometheus: the stack's wiring, and the rerankd service's environment run for
real (the CUDA image's ENV on the CPU, a real redis-server standing in for the `redis` service)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from deploy_support import (
    COMPOSE,
    DEPLOY,
    DOCKERFILES,
    FAKE_MODEL,
    REPO,
    Dockerfile,
    ImageProcess,
    abort_grace_seconds,
    image_env,
    load_yaml_docs,
    serve_settings_from_env,
)
from helpers import RedisServer, wait_until

from rerankd.settings import Settings

PINNED_TAG = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_yaml_docs(COMPOSE)
    return doc


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_rerankd_builds_the_cpu_image_from_the_repository(compose: dict[str, Any]) -> None:
    build = compose["services"]["rerankd"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILES[0]
    assert "MODEL" in build["args"]  # baked in: the container starts offline


def test_rerankd_uses_the_redis_service_as_its_shared_cache(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["rerankd"]["environment"]
    assert env["RERANKD_CACHE_URL"] == "redis://redis:6379/0"
    assert "redis" in services and services["rerankd"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert PINNED_TAG.match(services["redis"]["image"]), services["redis"]["image"]
    models, settings = serve_settings_from_env(env)
    assert settings.cache_url == env["RERANKD_CACHE_URL"] and not settings.no_cache


def test_stop_grace_period_outlasts_the_drain(compose: dict[str, Any]) -> None:
    service = compose["services"]["rerankd"]
    _, settings = serve_settings_from_env(service["environment"])
    assert _seconds(service["stop_grace_period"]) > settings.drain_timeout + abort_grace_seconds()


def test_prometheus_is_optional_and_scrapes_rerankd_metrics(compose: dict[str, Any],
                                                            app_get: Any) -> None:
    service = compose["services"]["prometheus"]
    assert service["profiles"] == ["monitoring"]
    assert PINNED_TAG.match(service["image"]), service["image"]
    source, target = service["volumes"][0].split(":")[:2]
    config_path = (COMPOSE.parent / source).resolve()
    assert config_path == DEPLOY / "prometheus" / "prometheus.yml"
    assert target in " ".join(service["command"])
    (config,) = load_yaml_docs(config_path)
    (job,) = config["scrape_configs"]
    assert app_get(job["metrics_path"]) == 200
    (target_host,) = job["static_configs"][0]["targets"]
    host, port = target_host.split(":")
    assert host in compose["services"] and int(port) == Settings().port
    assert compose["services"]["rerankd"]["ports"] == [f"{port}:{port}"]


def test_the_rerankd_service_runs_with_redis_and_drains_on_sigterm(
    compose: dict[str, Any], hf_home: Path, tmp_path: Path
) -> None:
    """The CUDA image's ENV (device set to cpu) plus the compose environment, against a real Redis;
    SIGTERM goes through tini where tini is installed, and the server exits 0 after its drain."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        dockerfile = Dockerfile(DOCKERFILES[1], {"MODEL": FAKE_MODEL})
        compose_env = dict(compose["services"]["rerankd"]["environment"])
        assert compose_env.pop("RERANKD_CACHE_URL") == "redis://redis:6379/0"
        env = image_env(dockerfile, hf_home, compose_env,
                        {"RERANKD_CACHE_URL": server.url, "RERANKD_DEVICE": "cpu"})
        process = ImageProcess(dockerfile.command, env, tmp_path / "rerankd.log")
        try:
            process.start()
            body = {"query": "What do giant pandas eat?", "documents": ["Pandas eat bamboo.", "Orange chicken."]}
            first = httpx.post(process.url + "/v1/rerank", json=body, timeout=30)
            assert first.status_code == 200 and first.headers["x-cache-hits"] == "0"
            store = redis.Redis.from_url(server.url)
            wait_until(lambda: store.dbsize() == 2, timeout=60, message="both scores written to the shared cache")
            assert process.terminate(timeout=30) == 0
            assert "draining" in process.logs()
        finally:
            process.kill()
    finally:
        server.stop()
