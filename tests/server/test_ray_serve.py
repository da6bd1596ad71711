"""`rerankd serve --ray`: the HTTP API as a Ray Serve application, on a local single-node Ray cluster."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from unittest import mock

import httpx
import pytest
from server_harness import DOCS, QUERY, ServerProcess

from rerankd import Reranker
from rerankd.errors import RerankdError
from rerankd.settings import SETTING_NAMES, Settings

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (it is in the dev extra)")

from rerankd.server.ray_serve import build_app, deployment_options  # noqa: E402

TEI_TEXTS = ["Pandas eat bamboo.", "大熊猫吃竹子。", "Panda Express sells orange chicken."]
# Marks every process of the test's Ray cluster (they inherit the environment), to find leftovers.
MARKER = f"RERANKD_TEST_RAY_RUN={uuid.uuid4().hex}"


def processes_with_marker() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if MARKER.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, a zombie, or not ours
            continue
    return found


@pytest.fixture(scope="module")
def ray_server(start_module_server, xlmr_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    name, value = MARKER.split("=")
    # A local cluster of its own (the CLI's default); the machine has 2 cores.
    return start_module_server([xlmr_dir], ["--ray"], env={name: value})


# --- options, without a cluster ---------------------------------------------------------------------


def test_deployment_options_follow_the_settings() -> None:
    settings = Settings(ray=True, ray_min_replicas=0, ray_max_replicas=4, ray_target_ongoing_requests=6, threads=3,
                        device="cuda", drain_timeout=12)
    options = deployment_options(settings)
    assert options["autoscaling_config"] == {
        "min_replicas": 0, "initial_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 6,
    }
    assert options["max_ongoing_requests"] == 12
    assert options["ray_actor_options"] == {
        "num_cpus": 3, "num_gpus": 1, "runtime_env": {"env_vars": {"RAYON_NUM_THREADS": "3"}}
    }
    assert options["graceful_shutdown_timeout_s"] == 12


def test_ray_and_workers_do_not_mix() -> None:
    with pytest.raises(RerankdError, match="--ray-max-replicas"):
        Settings(ray=True, workers=2)
    with pytest.raises(RerankdError, match="replicas"):
        Settings(ray_min_replicas=3, ray_max_replicas=2)


def test_serve_run_builder_takes_the_environment_not_args(xlmr_dir: Path) -> None:
    with pytest.raises(ValueError, match="RERANKD_"):
        build_app({"model": str(xlmr_dir)})
    with mock.patch.dict(os.environ, {"RERANKD_MODEL": f"tiny={xlmr_dir}", "RERANKD_RAY_MAX_REPLICAS": "3"}):
        app = build_app({})
    assert type(app).__name__ == "Application"


# --- through Ray's HTTP proxy -----------------------------------------------------------------------


def test_cohere_rerank_scores_match_the_library(ray_server: ServerProcess, reranker: Reranker) -> None:
    expected = reranker.compute_score([(QUERY, d) for d in DOCS])
    with ray_server.client() as client:
        for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
            response = client.post(path, json={"query": QUERY, "documents": DOCS, "return_documents": False})
            assert response.status_code == 200, response.text
            scores = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
            assert [scores[i] for i in range(len(DOCS))] == pytest.approx(expected, abs=1e-5)


def test_tei_rerank_scores_match_the_library(ray_server: ServerProcess, reranker: Reranker) -> None:
    logits = reranker.compute_score([(QUERY, t) for t in TEI_TEXTS], normalize=False)
    response = httpx.post(ray_server.url + "/rerank", json={"query": QUERY, "texts": TEI_TEXTS, "raw_scores": True},
                          timeout=60)
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert isinstance(ranks, list) and len(ranks) == len(TEI_TEXTS)
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert {r["index"]: r["score"] for r in ranks} == pytest.approx(dict(enumerate(logits)), abs=1e-5)


def test_replica_reports_ready_and_counts_its_requests(ray_server: ServerProcess) -> None:
    with ray_server.client() as client:
        assert client.get("/ready").json() == {"status": "ready"}
        assert client.get("/info").json()["state"] == "ready"
        assert client.post("/score", json={"text_1": QUERY, "text_2": DOCS}).status_code == 200
    assert (ray_server.metric("rerankd_requests_total", route="/score", status="200") or 0) >= 1


def test_sigterm_takes_the_ray_cluster_down(ray_server: ServerProcess) -> None:
    """Runs last in this module: it stops the shared server."""
    assert processes_with_marker(), "the marker did not reach the cluster's processes"
    ray_server.signal(signal.SIGTERM)
    assert ray_server.wait(timeout=60) == 0, ray_server.logs()
    deadline = time.monotonic() + 30
    while processes_with_marker() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with_marker() == [], "Ray processes outlived `rerankd serve --ray`"


def test_example_serve_config_is_valid_for_ray() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve_config.yaml").read_text())
    [app] = ServeDeploySchema.model_validate(config).applications
    assert app.import_path == "rerankd.server.ray_serve:build_app"
    assert [d.name for d in app.deployments] == ["Rerankd"]  # the class name, or the overrides are ignored
    assert set(app.runtime_env["env_vars"]) <= {"RERANKD_" + n.upper() for n in SETTING_NAMES}
