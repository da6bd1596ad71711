"""deploy/k8s: the kustomizations render, and what they tell Kubernetes matches the server.

No cluster runs here. The overlays are rendered in Python (deploy_support.render) and, where kubectl
is installed, compared with `kubectl kustomize`; probes, ports, settings, grace period and autoscaling
are checked against the real app, Settings and metrics."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from deploy_support import (
    K8S,
    OVERLAYS,
    ImageProcess,
    find,
    kustomization,
    load_yaml_docs,
    render,
    serve_settings_from_env,
    yaml_files,
)
from manifest_checks import (
    PROBE_PATHS,
    check_env_names_are_serve_settings,
    check_grace_period_outlasts_prestop_and_drain,
    check_non_root_with_read_only_root,
    check_probes_and_ports,
    check_resources_requested_and_limited,
    check_service_pdb_and_hpa_select_the_deployment,
    check_startup_probe_gives_minutes_to_load,
    configmap_env,
    container,
    hpa_metric,
)

IDS = [p.name for p in OVERLAYS]


@pytest.fixture(params=OVERLAYS, ids=IDS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_there_is_a_cpu_and_a_gpu_overlay() -> None:
    assert IDS == ["cpu", "gpu"]


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S.parent)))
def test_every_yaml_file_parses_and_every_manifest_is_named(path: Path) -> None:
    docs = load_yaml_docs(path)
    assert docs, path
    for doc in docs:
        if "kind" in doc and "apiVersion" in doc and doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


def test_kustomizations_list_files_that_exist() -> None:
    for directory in [K8S / "base", *OVERLAYS]:
        spec = kustomization(directory)
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            assert (directory / entry).exists(), f"{directory}: {entry}"


def test_rendered_documents_are_complete_and_unique(rendered: list[dict[str, Any]]) -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in rendered]
    assert len(keys) == len(set(keys))
    for doc in rendered:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    assert {k for k, _ in keys} == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                   "HorizontalPodAutoscaler"}
    assert "Secret" not in {k for k, _ in keys}  # the API keys are created by hand, never a placeholder


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=IDS)
def test_python_rendering_matches_kubectl_kustomize(overlay: Path) -> None:
    result = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    by_key = lambda docs: {(d["kind"], d["metadata"]["name"]): d for d in docs}  # noqa: E731
    assert by_key(yaml.safe_load_all(result.stdout)) == by_key(render(overlay))


def test_probes_use_real_routes_on_the_port_the_server_listens_on(rendered: list[dict[str, Any]],
                                                                  app_get: Callable[[str], int]) -> None:
    check_probes_and_ports(rendered, app_get)


def test_startup_probe_gives_the_model_minutes_to_load(rendered: list[dict[str, Any]]) -> None:
    check_startup_probe_gives_minutes_to_load(rendered)


def test_every_variable_is_a_setting_of_rerankd_serve(rendered: list[dict[str, Any]],
                                                      serve_env_names: set[str]) -> None:
    check_env_names_are_serve_settings(rendered, serve_env_names)


def test_probe_paths_answer_200_on_a_ready_server(pod: ImageProcess) -> None:
    probes = container(render(OVERLAYS[0]))
    for probe in PROBE_PATHS:
        assert httpx.get(pod.url + probes[probe]["httpGet"]["path"], timeout=5).status_code == 200


def test_grace_period_outlasts_prestop_and_the_drain(rendered: list[dict[str, Any]]) -> None:
    check_grace_period_outlasts_prestop_and_drain(rendered)


def test_settings_come_from_the_configmap_and_api_keys_from_the_secret(rendered: list[dict[str, Any]]) -> None:
    secrets = [e["secretRef"] for e in container(rendered)["envFrom"] if "secretRef" in e]
    (example,) = load_yaml_docs(K8S / "base" / "secret.example.yaml")
    assert secrets == [{"name": example["metadata"]["name"]}]  # not optional: no key, no start
    assert set(example["stringData"]) == {"RERANKD_API_KEY"}
    env = {**configmap_env(rendered), **example["stringData"]}
    models, settings = serve_settings_from_env(env)
    assert models == (env["RERANKD_MODEL"],)
    assert settings.host == "0.0.0.0" and settings.json_logs
    assert settings.api_key == tuple(example["stringData"]["RERANKD_API_KEY"].split(","))


def test_resources_are_requested_and_limited(rendered: list[dict[str, Any]]) -> None:
    check_resources_requested_and_limited(rendered)


def test_gpu_overlay_asks_for_one_gpu_and_runs_the_cuda_image() -> None:
    docs = render(K8S / "overlays" / "gpu")
    gpu = container(docs)
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"].endswith(":cuda-m3")
    (deployment,) = find(docs, "Deployment")
    tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    # the patch merged into the base container rather than adding a second one
    assert gpu["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "nvidia.com/gpu" not in str(render(K8S / "overlays" / "cpu"))


def test_runs_as_the_images_non_root_user_with_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    check_non_root_with_read_only_root(rendered)
    assert {m["mountPath"] for m in container(rendered)["volumeMounts"]} == {"/tmp"}


def test_service_pdb_and_hpa_point_at_the_deployment(rendered: list[dict[str, Any]]) -> None:
    check_service_pdb_and_hpa_select_the_deployment(rendered)


def test_cpu_hpa_scales_on_cpu_and_gpu_hpa_on_the_real_queue_gauge(metric_names: set[str]) -> None:
    assert hpa_metric(render(K8S / "overlays" / "cpu"))["resource"]["name"] == "cpu"
    metric = hpa_metric(render(K8S / "overlays" / "gpu"))
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "rerankd_queue_pairs" and "rerankd_queue_pairs" in metric_names
    (adapter,) = load_yaml_docs(K8S / "examples" / "prometheus-adapter-values.yaml")
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith("rerankd_queue_pairs{") and rule["name"]["as"] == "rerankd_queue_pairs"


def test_service_monitor_scrapes_the_metrics_route(app_get: Callable[[str], int]) -> None:
    (monitor,) = load_yaml_docs(K8S / "examples" / "servicemonitor.yaml")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert app_get(endpoint["path"]) == 200 and endpoint["port"] == "http"
