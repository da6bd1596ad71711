"""Checks that a set of rendered Kubernetes manifests agrees with the server, whichever tool rendered them:
the kustomize overlays (test_deploy_k8s.py) and the Helm chart (test_helm.py) both go through these.

Each `check_*` takes the rendered documents (one Deployment running one rerankd container) and fails with
an assertion that names what disagrees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy_support import abort_grace_seconds, find, serve_settings_from_env

from rerankd.settings import Settings

PROBE_PATHS = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rerankd Deployment: the one whose pods run a container named rerankd."""
    (found,) = [d for d in find(docs, "Deployment")
                if any(c["name"] == "rerankd" for c in d["spec"]["template"]["spec"]["containers"])]
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return found


def configmap_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """What the container gets from its ConfigMaps through envFrom, then its literal `env` values."""
    c = container(docs)
    names = [e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e]
    maps = {d["metadata"]["name"]: d["data"] for d in find(docs, "ConfigMap")}
    env = {k: v for name in names for k, v in maps[name].items()}
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def check_env_names_are_serve_settings(docs: list[dict[str, Any]], serve_env_names: set[str]) -> None:
    """Every RERANKD_* variable the container gets is one `rerankd serve` reads, and its value parses."""
    env = configmap_env(docs)
    names = {k for k in env if k.startswith("RERANKD_")}
    names |= {e["name"] for e in container(docs).get("env", []) if e["name"].startswith("RERANKD_")}
    assert names - serve_env_names == set()
    serve_settings_from_env(env)


def check_probes_and_ports(docs: list[dict[str, Any]], app_get: Callable[[str], int]) -> None:
    """Probes ask real routes on the port the server listens on, and the Service sends traffic there."""
    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    port = int(configmap_env(docs).get("RERANKD_PORT", Settings().port))
    assert ports == {"http": port}
    for probe, path in PROBE_PATHS.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port
    # The real app, before its model is loaded: liveness passes, startup and readiness wait.
    assert (app_get("/health"), app_get("/ready"), app_get("/no-such-route")) == (200, 503, 404)
    labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    (service,) = [s for s in find(docs, "Service") if s["spec"]["selector"].items() <= labels.items()]
    assert all(p["targetPort"] in ports or p["targetPort"] == port for p in service["spec"]["ports"])


def check_startup_probe_gives_minutes_to_load(docs: list[dict[str, Any]]) -> None:
    startup = container(docs)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def check_grace_period_outlasts_prestop_and_drain(docs: list[dict[str, Any]]) -> None:
    pod_spec = deployment(docs)["spec"]["template"]["spec"]
    _, settings = serve_settings_from_env(configmap_env(docs))
    pre_stop = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + settings.drain_timeout + abort_grace_seconds()
    assert pod_spec["terminationGracePeriodSeconds"] > needed


def check_resources_requested_and_limited(docs: list[dict[str, Any]]) -> None:
    resources = container(docs)["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind])


def check_non_root_with_read_only_root(docs: list[dict[str, Any]]) -> None:
    """The image's uid 10001, no privilege escalation, and /tmp as the one writable place it always needs."""
    pod_spec = deployment(docs)["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] == 10001
    c = container(docs)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}


def check_service_pdb_and_hpa_select_the_deployment(docs: list[dict[str, Any]]) -> None:
    d = deployment(docs)
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert any(s["spec"]["selector"].items() <= labels.items() for s in find(docs, "Service"))
    (pdb,) = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", d["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def hpa_metric(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    return metric
