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
    abort_grace_seconds,
    find,
    kustomization,
    load_yaml_docs,
    render,
    serve_settings_from_env,
    yaml_files,
)

from rerankd.settings import Settings

IDS = [p.name for p in OVERLAYS]


@pytest.fixture(params=OVERLAYS, ids=IDS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _configmap_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = _container(docs)
    names = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    maps = {d["metadata"]["name"]: d["data"] for d in find(docs, "ConfigMap")}
    return {k: v for name in names for k, v in maps[name].items()}


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
    container = _container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = int(_configmap_env(rendered).get("RERANKD_PORT", Settings().port))
    assert ports == {"http": port}
    expected = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port
    # The real app, before its model is loaded: liveness passes, startup and readiness wait.
    assert (app_get("/health"), app_get("/ready"), app_get("/no-such-route")) == (200, 503, 404)
    (service,) = find(rendered, "Service")
    assert all(p["targetPort"] in ports or p["targetPort"] == port for p in service["spec"]["ports"])


def test_startup_probe_gives_the_model_minutes_to_load(rendered: list[dict[str, Any]]) -> None:
    startup = _container(rendered)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_probe_paths_answer_200_on_a_ready_server(pod: ImageProcess) -> None:
    container = _container(render(OVERLAYS[0]))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert httpx.get(pod.url + container[probe]["httpGet"]["path"], timeout=5).status_code == 200


def test_grace_period_outlasts_prestop_and_the_drain(rendered: list[dict[str, Any]]) -> None:
    (deployment,) = find(rendered, "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    _, settings = serve_settings_from_env(_configmap_env(rendered))
    pre_stop = _container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + settings.drain_timeout + abort_grace_seconds()
    assert pod_spec["terminationGracePeriodSeconds"] > needed


def test_settings_come_from_the_configmap_and_api_keys_from_the_secret(rendered: list[dict[str, Any]]) -> None:
    container = _container(rendered)
    secrets = [e["secretRef"] for e in container["envFrom"] if "secretRef" in e]
    (example,) = load_yaml_docs(K8S / "base" / "secret.example.yaml")
    assert secrets == [{"name": example["metadata"]["name"]}]  # not optional: no key, no start
    assert set(example["stringData"]) == {"RERANKD_API_KEY"}
    env = {**_configmap_env(rendered), **example["stringData"]}
    models, settings = serve_settings_from_env(env)
    assert models == (env["RERANKD_MODEL"],)
    assert settings.host == "0.0.0.0" and settings.json_logs
    assert settings.api_key == tuple(example["stringData"]["RERANKD_API_KEY"].split(","))


def test_resources_are_requested_and_limited(rendered: list[dict[str, Any]]) -> None:
    resources = _container(rendered)["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind])


def test_gpu_overlay_asks_for_one_gpu_and_runs_the_cuda_image() -> None:
    docs = render(K8S / "overlays" / "gpu")
    container = _container(docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":cuda-m3")
    (deployment,) = find(docs, "Deployment")
    tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    # the patch merged into the base container rather than adding a second one
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "nvidia.com/gpu" not in str(render(K8S / "overlays" / "cpu"))


def test_runs_as_the_images_non_root_user_with_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    (deployment,) = find(rendered, "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] == 10001
    container = _container(rendered)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_service_pdb_and_hpa_point_at_the_deployment(rendered: list[dict[str, Any]]) -> None:
    (deployment,) = find(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service,) = find(rendered, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (pdb,) = find(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    (hpa,) = find(rendered, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_cpu_hpa_scales_on_cpu_and_gpu_hpa_on_the_real_queue_gauge(metric_names: set[str]) -> None:
    (cpu_hpa,) = find(render(K8S / "overlays" / "cpu"), "HorizontalPodAutoscaler")
    assert cpu_hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    (gpu_hpa,) = find(render(K8S / "overlays" / "gpu"), "HorizontalPodAutoscaler")
    metric = gpu_hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "rerankd_queue_pairs" and "rerankd_queue_pairs" in metric_names
    (adapter,) = load_yaml_docs(K8S / "examples" / "prometheus-adapter-values.yaml")
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith("rerankd_queue_pairs{") and rule["name"]["as"] == "rerankd_queue_pairs"


def test_service_monitor_scrapes_the_metrics_route(app_get: Callable[[str], int]) -> None:
    (monitor,) = load_yaml_docs(K8S / "examples" / "servicemonitor.yaml")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert app_get(endpoint["path"]) == 200 and endpoint["port"] == "http"
