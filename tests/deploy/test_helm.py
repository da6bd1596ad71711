"""deploy/helm/rerankd: a real helm lints and renders the chart, and what it renders agrees with the server
(the checks the kustomize overlays pass, from manifest_checks) and, in substance, with the kustomize
overlays. The `helm test` hook's script runs against a real server.

No cluster runs here. scripts/test.sh puts helm into the virtualenv when it is missing; without helm
these tests skip."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from deploy_support import (
    DEPLOY,
    DEPLOY_DOC,
    DOCKERFILES,
    K8S,
    REPO,
    Dockerfile,
    ImageProcess,
    clean_env,
    find,
    load_yaml_docs,
    render,
    serve_settings_from_env,
)
from helpers import free_port, wait_until
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
    deployment,
    hpa_metric,
)

import rerankd
from rerankd.settings import Settings

HELM = shutil.which("helm")
pytestmark = pytest.mark.skipif(HELM is None, reason="helm is not installed (scripts/test.sh fetches it)")

CHART = DEPLOY / "helm" / "rerankd"
GPU_VALUES = CHART / "values-gpu.yaml"
EXTERNAL_REDIS = "redis://redis.cache.svc.cluster.local:6379/0"
# The renders the issue asks for, plus the chart's own Redis.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "gpu": ["-f", str(GPU_VALUES)],
    "external-redis": ["--set", f"redis.url={EXTERNAL_REDIS}"],
    "bundled-redis": ["--set", "redis.deploy=true"],
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def template(*args: str) -> list[dict[str, Any]]:
    """`helm template rerankd deploy/helm/rerankd ARGS`, parsed. The release is named rerankd, so the
    objects get the kustomize names."""
    result = helm("template", "rerankd", str(CHART), *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def refused(*args: str) -> str:
    """The error of a `helm template` that must fail."""
    result = helm("template", "rerankd", str(CHART), *args)
    assert result.returncode != 0, f"helm template {args} rendered"
    return result.stderr


def hook_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (pod,) = [d for d in find(docs, "Pod") if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    return pod


def server_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `helm install` creates: all but the test hook, which only `helm test` creates."""
    return [d for d in docs if "helm.sh/hook" not in d["metadata"].get("annotations", {})]


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return template(*VARIANTS[request.param])


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return template()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chart_passes_helm_lint_strict(variant: str) -> None:
    result = helm("lint", "--strict", str(CHART), *VARIANTS[variant])
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_documents_parse_and_are_unique(rendered: list[dict[str, Any]]) -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in rendered]
    assert len(keys) == len(set(keys))
    for doc in rendered:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    assert {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "Pod"} <= {k for k, _ in keys}


def test_what_the_pod_is_told_matches_the_server(rendered: list[dict[str, Any]], app_get: Callable[[str], int],
                                                 serve_env_names: set[str]) -> None:
    """The checks the kustomize overlays pass: variables, probes and ports, start-up budget, shutdown, resources,
    security, and the Service, PDB and HPA selecting the Deployment."""
    check_env_names_are_serve_settings(rendered, serve_env_names)
    for secret in find(rendered, "Secret"):
        assert set(secret["data"]) <= serve_env_names
    check_probes_and_ports(rendered, app_get)
    check_startup_probe_gives_minutes_to_load(rendered)
    check_grace_period_outlasts_prestop_and_drain(rendered)
    check_resources_requested_and_limited(rendered)
    check_non_root_with_read_only_root(rendered)
    check_service_pdb_and_hpa_select_the_deployment(rendered)
    for doc in [*find(rendered, "Deployment"), hook_pod(rendered)]:  # no pod talks to the Kubernetes API
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
        assert spec["automountServiceAccountToken"] is False


def _settings(docs: list[dict[str, Any]]) -> tuple[tuple[str, ...], Settings]:
    """The models and Settings `rerankd serve` builds from what the ConfigMap (and literal env) give it."""
    return serve_settings_from_env(configmap_env(docs))


@pytest.mark.parametrize(("values", "overlay"), [([], "cpu"), (["-f", str(GPU_VALUES)], "gpu")], ids=["cpu", "gpu"])
def test_renders_what_the_kustomize_overlay_does(values: list[str], overlay: str) -> None:
    """Same models and Settings once `rerankd serve` parses the env, same probes, shutdown, resources, security,
    scheduling, image and autoscaling. Labels and the replica count differ on purpose (Helm's standard labels;
    with the HPA on, the Deployment leaves the count to it)."""
    chart, kustomize = server_docs(template(*values)), render(K8S / "overlays" / overlay)
    assert _settings(chart) == _settings(kustomize)
    ours, theirs = container(chart), container(kustomize)
    for field in (*PROBE_PATHS, "lifecycle", "resources", "securityContext", "ports", "image", "imagePullPolicy"):
        assert ours[field] == theirs[field], field
    pod_ours, pod_theirs = deployment(chart)["spec"]["template"]["spec"], deployment(kustomize)["spec"]["template"]["spec"]
    for field in ("terminationGracePeriodSeconds", "securityContext", "volumes"):
        assert pod_ours[field] == pod_theirs[field], field
    assert pod_ours.get("tolerations") == pod_theirs.get("tolerations")
    assert deployment(chart)["spec"]["strategy"] == deployment(kustomize)["spec"]["strategy"]
    assert hpa_metric(chart) == hpa_metric(kustomize)
    (hpa_ours,), (hpa_theirs,) = find(chart, "HorizontalPodAutoscaler"), find(kustomize, "HorizontalPodAutoscaler")
    for field in ("minReplicas", "maxReplicas", "behavior"):
        assert hpa_ours["spec"][field] == hpa_theirs["spec"][field], field
    assert "replicas" not in deployment(chart)["spec"]
    (pdb_ours,), (pdb_theirs,) = find(chart, "PodDisruptionBudget"), find(kustomize, "PodDisruptionBudget")
    assert pdb_ours["spec"]["maxUnavailable"] == pdb_theirs["spec"]["maxUnavailable"]
    (svc_ours,), (svc_theirs,) = find(chart, "Service"), find(kustomize, "Service")
    assert svc_ours["spec"]["ports"] == svc_theirs["spec"]["ports"]
    names = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}  # noqa: E731
    assert names(kustomize) <= names(chart)  # the chart adds the API key Secret


def test_gpu_values_ask_for_a_gpu_on_gpu_nodes_with_the_cuda_image(default: list[dict[str, Any]]) -> None:
    gpu = template("-f", str(GPU_VALUES), "--set", "gpu.count=2", "--set", "nodeSelector.gpu-type=h100",
                   "--set", "image.cudaTag=cuda-custom")
    resources = container(gpu)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 2
    assert container(gpu)["image"].endswith(":cuda-custom")
    spec = deployment(gpu)["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"gpu-type": "h100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert "nvidia.com/gpu" not in json.dumps(default)


def test_external_redis_url_or_secret_reaches_the_server() -> None:
    docs = template(*VARIANTS["external-redis"])
    assert _settings(docs)[1].cache_url == EXTERNAL_REDIS
    assert not [d for d in find(docs, "Deployment") if "redis" in d["metadata"]["name"]]
    from_secret = template("--set", "redis.urlSecret.name=my-redis", "--set", "redis.urlSecret.key=url")
    (env,) = container(from_secret)["env"]
    assert env == {"name": "RERANKD_CACHE_URL", "valueFrom": {"secretKeyRef": {"name": "my-redis", "key": "url"}}}
    assert "RERANKD_CACHE_URL" not in configmap_env(from_secret)
    assert "choose one Redis" in refused("--set", "redis.deploy=true", "--set", f"redis.url={EXTERNAL_REDIS}")


def test_bundled_redis_is_a_cache_behind_its_own_service() -> None:
    docs = template(*VARIANTS["bundled-redis"])
    (redis_deployment,) = [d for d in find(docs, "Deployment") if d is not deployment(docs)]
    (redis_service,) = [s for s in find(docs, "Service") if s["metadata"]["name"].endswith("-redis")]
    redis_labels = redis_deployment["spec"]["template"]["metadata"]["labels"]
    assert redis_service["spec"]["selector"].items() <= redis_labels.items()
    rerankd_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    for service in find(docs, "Service"):  # each Service reaches exactly one of the two
        assert (service["spec"]["selector"].items() <= redis_labels.items()) != (
            service["spec"]["selector"].items() <= rerankd_labels.items())
    url = httpx.URL(_settings(docs)[1].cache_url)
    assert (url.host, url.port) == (redis_service["metadata"]["name"], redis_service["spec"]["ports"][0]["port"])
    (redis_container,) = redis_deployment["spec"]["template"]["spec"]["containers"]
    command = redis_container["command"]
    assert command[0] == "redis-server" and "allkeys-lru" in command and "--maxmemory" in command


def test_bundled_redis_command_starts_a_real_redis_server_as_an_lru_cache(tmp_path: Path) -> None:
    """The rendered command line, given to the redis-server the cache tests use (scripts/test.sh installs it),
    with only the address and working directory made local."""
    (redis_deployment,) = [d for d in find(template("--set", "redis.deploy=true", "--set", "redis.maxMemory=64mb"),
                                           "Deployment") if d["metadata"]["name"].endswith("-redis")]
    (command,) = [c["command"] for c in redis_deployment["spec"]["template"]["spec"]["containers"]]
    binary = shutil.which(command[0])
    assert binary, "redis-server is not installed; scripts/test.sh installs it"
    port = free_port()
    process = subprocess.Popen([binary, *command[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=5)

        def answers() -> bool:
            assert process.poll() is None, f"redis-server exited with {process.returncode}"
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout=60, message="redis-server answering")
        config = client.config_get("*")
        assert (config["maxmemory"], config["maxmemory-policy"]) == (str(64 * 1024 * 1024), "allkeys-lru")
        assert (config["save"], config["appendonly"]) == ("", "no")
    finally:
        process.kill()
        process.wait(10)


def test_settings_values_reach_the_server_as_rerankd_serve_reads_them() -> None:
    docs = template("--set", "settings.RERANKD_MAX_BATCH_TOKENS=8192", "--set", "settings.RERANKD_CORS_ORIGIN={a,b}",
                    "--set", "settings.RERANKD_STRICT_MODEL_NAME=true", "--set", "model.revision=v2",
                    "--set", "model.dtype=int8", "--set", "model.maxLength=1024", "--set", "containerPort=9000",
                    "--set", "drainTimeoutSeconds=40", "--set", "terminationGracePeriodSeconds=70")
    models, settings = _settings(docs)
    assert models == ("BAAI/bge-reranker-v2-m3",)
    assert (settings.max_batch_tokens, settings.cors_origin, settings.strict_model_name) == (8192, ("a", "b"), True)
    assert (settings.revision, settings.dtype, settings.max_length, settings.port) == ("v2", "int8", 1024, 9000)
    assert settings.drain_timeout == 40
    check_grace_period_outlasts_prestop_and_drain(docs)


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "settings.RERANKD_PORT=9000"], "use containerPort"),
    (["--set", "settings.RERANKD_API_KEY=k"], "use apiKeys"),
    (["--set", "drainTimeoutSeconds=60"], "terminationGracePeriodSeconds (60) must be above"),
    (["--set", "model.source=volume"], "set model.volume.claimName"),
], ids=["owned-setting", "api-key-setting", "grace-period", "volume-without-claim"])
def test_contradictory_values_are_refused_with_what_to_change(args: list[str], message: str) -> None:
    assert message in refused(*args)


@pytest.mark.parametrize("values", [
    {"replicaCount": "two"},
    {"model": {"maxLength": "512"}},
    {"model": {"dtype": "fp8"}},
    {"gpu": {"enabled": "yes"}},
    {"autoscaling": {"metric": "memory"}},
    {"autoscalng": {"enabled": False}},
    {"settings": {"max_batch_tokens": 8192}},
], ids=["string-for-int", "string-max-length", "unknown-dtype", "string-for-bool", "unknown-metric",
        "misspelt-key", "setting-not-a-variable"])
def test_a_wrong_value_fails_helm_lint_through_the_schema(values: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm("lint", "--strict", str(CHART), "-f", str(path))
    assert result.returncode != 0
    assert "schema" in result.stdout + result.stderr


def _secret_keys(docs: list[dict[str, Any]], name: str) -> str:
    (secret,) = [s for s in find(docs, "Secret") if s["metadata"]["name"] == name]
    return base64.b64decode(secret["data"]["RERANKD_API_KEY"]).decode()


def _secret_ref(docs: list[dict[str, Any]]) -> str | None:
    refs = [e["secretRef"]["name"] for e in container(docs)["envFrom"] if "secretRef" in e]
    assert len(refs) <= 1
    return refs[0] if refs else None


def test_api_keys_come_from_an_existing_secret_given_keys_or_a_generated_key(default: list[dict[str, Any]]) -> None:
    generated = _secret_keys(default, _secret_ref(default) or "")
    assert re.fullmatch(r"[A-Za-z0-9]{40}", generated)
    existing = template("--set", "apiKeys.existingSecret=rerankd-api-keys")
    assert _secret_ref(existing) == "rerankd-api-keys" and not find(existing, "Secret")
    given = template("--set", "apiKeys.keys={key-one,key-two}")
    assert _secret_keys(given, _secret_ref(given) or "") == "key-one,key-two"
    open_server = template("--set", "apiKeys.generate=false")
    assert _secret_ref(open_server) is None and not find(open_server, "Secret")
    for docs in (default, existing, given):  # the hook authenticates with the key the server reads
        (env,) = [e for e in hook_pod(docs)["spec"]["containers"][0]["env"] if "valueFrom" in e]
        assert env["valueFrom"]["secretKeyRef"] == {"name": _secret_ref(docs), "key": "RERANKD_API_KEY"}


def test_model_from_the_hub_or_a_volume_sets_up_the_hugging_face_cache() -> None:
    image_hf_home = Dockerfile(DOCKERFILES[0]).env["HF_HOME"]
    hub = template("--set", "model.source=hub", "--set", "model.revision=main")
    assert configmap_env(hub)["HF_HUB_OFFLINE"] == "0"
    mounts = {m["name"]: m for m in container(hub)["volumeMounts"]}
    assert mounts["hub-cache"]["mountPath"] == image_hf_home and not mounts["hub-cache"].get("readOnly")

    cache = template("--set", "model.source=volume", "--set", "model.volume.claimName=models")
    env = configmap_env(cache)
    assert "HF_HUB_OFFLINE" not in env  # the image's HF_HUB_OFFLINE=1 stays
    (mount,) = [m for m in container(cache)["volumeMounts"] if m["name"] == "model"]
    assert env["HF_HOME"] == mount["mountPath"] and mount["readOnly"] is True
    (volume,) = [v for v in deployment(cache)["spec"]["template"]["spec"]["volumes"] if v["name"] == "model"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}

    directory = template("--set", "model.source=volume", "--set", "model.volume.claimName=models",
                         "--set", "model.id=/models/volume/bge-reranker-v2-m3")
    assert "HF_HOME" not in configmap_env(directory)
    assert _settings(directory)[0] == ("/models/volume/bge-reranker-v2-m3",)


def test_service_monitor_scrapes_the_metrics_route_of_the_service(app_get: Callable[[str], int]) -> None:
    docs = template("--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prom")
    (monitor,) = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert app_get(endpoint["path"]) == 200
    (service,) = find(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_hpa_on_the_queue_metric_and_no_hpa() -> None:
    queue = template("--set", "autoscaling.metric=queue", "--set", "autoscaling.targetQueuePairs=512")
    assert hpa_metric(queue)["pods"] == {"metric": {"name": "rerankd_queue_pairs"},
                                         "target": {"type": "AverageValue", "averageValue": "512"}}
    fixed = template("--set", "autoscaling.enabled=false", "--set", "replicaCount=3")
    assert not find(fixed, "HorizontalPodAutoscaler") and deployment(fixed)["spec"]["replicas"] == 3


def test_helm_test_hook_passes_against_a_running_server(default: list[dict[str, Any]], pod: ImageProcess) -> None:
    """The hook's own script, run here against the server the kustomize base configures (the same
    Settings as the chart's default, test above), as its container would run it."""
    hook = hook_pod(default)
    assert hook["spec"]["restartPolicy"] == "Never"
    (hook_container,) = hook["spec"]["containers"]
    assert hook_container["image"] == container(default)["image"]  # no other image to pull
    argv = hook_container["command"]
    assert argv[:2] == ["python", "-c"]
    (url,) = [e["value"] for e in hook_container["env"] if e["name"] == "SERVICE_URL"]
    (service,) = find(server_docs(default), "Service")
    assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    keys = ",".join(pod.api_keys)  # type: ignore[attr-defined]
    env = clean_env(SERVICE_URL=pod.url, API_KEYS=keys)
    result = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "GET /ready: 200" in result.stdout and "POST /v1/rerank:" in result.stdout
    wrong_key = subprocess.run([sys.executable, *argv[1:]], env=clean_env(SERVICE_URL=pod.url, API_KEYS="wrong"),
                               capture_output=True, text=True, timeout=120)
    assert wrong_key.returncode != 0 and "401" in wrong_key.stderr


def test_notes_say_how_to_reach_the_service_and_the_example_request_works(pod: ImageProcess) -> None:
    result = helm("install", "rerankd", str(CHART), "--dry-run=client", "--namespace", "search")
    assert result.returncode == 0, result.stderr
    notes = result.stdout[result.stdout.index("NOTES:"):]
    assert "--namespace search port-forward service/rerankd 8080:80" in notes
    assert "helm test rerankd --namespace search" in notes
    assert "get secret rerankd-api-keys" in notes
    (body,) = re.findall(r"-d '(\{.*\})'", notes)
    key = pod.api_keys[0]  # type: ignore[attr-defined]
    answer = httpx.post(pod.url + "/v1/rerank", content=body, timeout=30,
                        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text


def test_chart_packages_with_its_schema_and_test_hook_at_rerankds_version(tmp_path: Path) -> None:
    (chart,) = load_yaml_docs(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == rerankd.__version__
    result = helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("rerankd-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"rerankd/values.schema.json", "rerankd/templates/tests/test-rerank.yaml",
            "rerankd/templates/NOTES.txt"} <= names


def test_install_commands_in_the_doc_render() -> None:
    """Each `helm install ... deploy/helm/rerankd ...` line of docs/deploy.md, as a client-side dry run."""
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    commands = [line.split("#")[0] for line in doc.splitlines() if line.startswith("helm install rerankd ")]
    assert any(c.split() == ["helm", "install", "rerankd", "deploy/helm/rerankd", "--set",
                             "model.id=BAAI/bge-reranker-v2-m3"] for c in commands)
    for command in commands:
        result = subprocess.run([str(HELM), *shlex.split(command)[1:], "--dry-run=client"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command}: {result.stderr}"
