"""Readers for the deploy artifacts (Dockerfile, .dockerignore, kustomize, compose) and a process harness.

No Docker engine or cluster runs the tests, so what those tools would do is done here, small and
literal: a Dockerfile parser that joins continued lines and substitutes ARG/ENV values, the
.dockerignore matching rules (last matching pattern wins, `!` re-includes, a match on a directory
covers what is in it), and a kustomize renderer for what our kustomizations use (resources,
strategic-merge patches keyed by kind and name, `images`). Where `kubectl` is installed the tests
compare this renderer with `kubectl kustomize`.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import yaml
from helpers import free_port

from rerankd.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.cuda"]
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx" / "rerankd.conf"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
# The hub id the test "image" is built with (--build-arg MODEL=...); its files are the tiny fixture.
FAKE_MODEL = "rerankd-test/tiny-reranker"
ENV_NAME = re.compile(r"\bRERANKD_[A-Z0-9_]*[A-Z0-9]")
# PATH in the official python images; Dockerfiles extend it with $PATH.
BASE_IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# The deploy directories these tests cover (deploy/gunicorn and deploy/ray are tested with the server).
DEPLOY_DIRS = [DEPLOY / name for name in ("docker", "compose", "k8s", "helm", "nginx", "prometheus")]


def deploy_files() -> list[Path]:
    return sorted(p for d in DEPLOY_DIRS for p in d.rglob("*") if p.is_file())


def yaml_files() -> list[Path]:
    """YAML files as they are on disk; a Helm chart's templates are Go templates (test_helm.py renders them)."""
    return [p for p in deploy_files() if p.suffix in (".yaml", ".yml") and "templates" not in p.parts]


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


# -- Dockerfile --------------------------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Docker's variable forms: $X, ${X}, ${X:-default}, ${X:+alternative} (unset and empty are alike)."""

    def one(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        value = values.get(name, "")
        if m.group("op") == "-":
            return value or substitute(m.group("word"), values)
        if m.group("op") == "+":
            return substitute(m.group("word"), values) if value else ""
        return value

    return _VAR.sub(one, text)


@dataclass
class Instruction:
    keyword: str
    rest: str
    line: int


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile_lines(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined; comment lines (also inside continuations) dropped."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, rest = pending.partition(" ")
        out.append(Instruction(keyword.upper(), rest.strip(), start))
        pending = ""
    assert not pending, f"{path}: a continued line runs off the end of the file"
    return out


def _flags(rest: str) -> tuple[dict[str, str], str]:
    """Leading --flag=value options of COPY/HEALTHCHECK/FROM, and what follows them."""
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags[key] = value
        rest = rest.lstrip()
    return flags, rest


def _arg(ins: Instruction) -> tuple[str, str, str]:
    """`ARG NAME[=default]`, with the default's quotes removed as Docker removes them."""
    words = shlex.split(ins.rest)
    assert len(words) == 1, f"line {ins.line}: one ARG per line"
    return words[0].partition("=")


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {text}"
    return value


class Dockerfile:
    """One Dockerfile, with build args applied: stages, the final stage's ENV, entrypoint and health check."""

    def __init__(self, path: Path, build_args: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.build_args = dict(build_args or {})
        self.instructions = parse_dockerfile_lines(path)
        self.global_args: dict[str, str] = {}
        self.stages: list[Stage] = []
        for ins in self.instructions:
            if ins.keyword == "FROM":
                _, rest = _flags(ins.rest)
                parts = rest.split()
                base = substitute(parts[0], self.global_args)
                name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
                self.stages.append(Stage(name, base))
            elif not self.stages:
                assert ins.keyword == "ARG", f"{path}:{ins.line}: only ARG may come before the first FROM"
                key, _, default = _arg(ins)
                self.global_args[key] = self.build_args.get(key, default)
            else:
                self.stages[-1].instructions.append(ins)
        assert self.stages, f"{path} has no FROM"

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_env(self, stage: Stage) -> dict[str, str]:
        """ENV of a stage as Docker computes it (ARGs visible to substitution, not kept as env)."""
        env = {"PATH": BASE_IMAGE_PATH}
        args: dict[str, str] = {}
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                key, sep, default = _arg(ins)
                args[key] = self.build_args.get(key, default if sep else self.global_args.get(key, ""))
            elif ins.keyword == "ENV":
                for word in shlex.split(ins.rest):
                    key, sep, value = word.partition("=")
                    assert sep, f"{self.path}:{ins.line}: use ENV KEY=value"
                    env[key] = substitute(value, {**args, **env})
        return env

    @property
    def env(self) -> dict[str, str]:
        return self.stage_env(self.final)

    def last(self, keyword: str, stage: Stage | None = None) -> Instruction | None:
        found = [i for i in (stage or self.final).instructions if i.keyword == keyword]
        return found[-1] if found else None

    @property
    def command(self) -> list[str]:
        """ENTRYPOINT + CMD of the final stage, both in exec form."""
        entry = self.last("ENTRYPOINT")
        cmd = self.last("CMD")
        return (exec_form(entry.rest) if entry else []) + (exec_form(cmd.rest) if cmd else [])

    @property
    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        ins = self.last("HEALTHCHECK")
        assert ins is not None, f"{self.path}: no HEALTHCHECK"
        flags, rest = _flags(ins.rest)
        keyword, _, argv = rest.partition(" ")
        assert keyword.upper() == "CMD", f"{self.path}: HEALTHCHECK without CMD"
        return flags, exec_form(argv)

    def context_copies(self) -> Iterator[tuple[Instruction, list[str]]]:
        """COPY/ADD instructions that read the build context (not --from=stage), with their sources."""
        for stage in self.stages:
            for ins in stage.instructions:
                if ins.keyword in ("COPY", "ADD"):
                    flags, rest = _flags(ins.rest)
                    if "from" in flags:
                        continue
                    parts = exec_form(rest) if rest.startswith("[") else rest.split()
                    yield ins, parts[:-1]


# -- .dockerignore -------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1].replace("[!", "[^")
            i = end + 1
            continue
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    """BuildKit's rules: patterns match paths from the context root or any of their parent directories;
    the last pattern that matches decides, and `!pattern` puts a path back."""

    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((include, _pattern_regex(pattern)))

    def excluded(self, relative: str) -> bool:
        parts = Path(relative).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for include, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                excluded = not include
        return excluded


# -- kustomize -------------------------------------------------------------------------------------------


def _key(doc: Mapping[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def strategic_merge(base: Any, patch: Any) -> Any:
    """Maps merge key by key; lists of maps that all have `name` merge item by item (containers,
    volumes, env); other lists are replaced. That is strategic merge for the fields our patches touch."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            merged[k] = strategic_merge(base[k], v) if k in base else copy.deepcopy(v)
        return merged
    if (isinstance(base, list) and isinstance(patch, list) and base and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        merged_list = [copy.deepcopy(x) for x in base]
        for item in patch:
            index = next((i for i, x in enumerate(merged_list) if x["name"] == item["name"]), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def _set_images(doc: dict[str, Any], images: list[dict[str, str]]) -> None:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        for rule in images:
            if rule["name"] == name:
                new_tag = rule.get("newTag", tag)
                container["image"] = rule.get("newName", name) + (f":{new_tag}" if new_tag else "")


def kustomization(directory: Path) -> dict[str, Any]:
    docs = load_yaml_docs(directory / "kustomization.yaml")
    assert len(docs) == 1 and docs[0].get("kind") == "Kustomization", directory
    return docs[0]


def render(directory: Path) -> list[dict[str, Any]]:
    """The documents `kustomize build directory` gives for our kustomizations, in resource order."""
    spec = kustomization(directory)
    unsupported = set(spec) - {"apiVersion", "kind", "resources", "patches", "images"}
    assert not unsupported, f"{directory}: this renderer does not know {sorted(unsupported)}"
    docs: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        path = (directory / resource).resolve()
        docs += render(path) if path.is_dir() else load_yaml_docs(path)
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only file patches (path:) are rendered here"
        for p in load_yaml_docs(directory / patch["path"]):
            index = next(i for i, d in enumerate(docs) if _key(d) == _key(p))
            docs[index] = strategic_merge(docs[index], p)
    for doc in docs:
        _set_images(doc, spec.get("images", []))
    return docs


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# -- settings as `rerankd serve` reads them from the environment ----------------------------------------


@contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    with mock.patch.dict(os.environ, {**base, **env}, clear=True):
        yield


def serve_settings_from_env(env: Mapping[str, str]) -> tuple[tuple[str, ...], Settings]:
    """The models and Settings `rerankd serve` builds from `env` (types, choices and checks included)."""
    from rerankd.cli.main import cli
    from rerankd.cli.serve import SERVE_SETTINGS

    serve = cli.commands["serve"]
    with _environ(env):
        cli.make_context("rerankd", ["serve"])  # the group's own options (--log-level)
        params = serve.make_context("serve", []).params
    values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in params.items()}
    return tuple(values["models"]), Settings(**{name: values[name] for name in SERVE_SETTINGS})


def abort_grace_seconds() -> float:
    """Seconds the server gives its last 503s after the drain deadline (module moved with --workers)."""
    for module in ("rerankd.server.drain", "rerankd.cli.serve"):
        try:
            return float(importlib.import_module(module).ABORT_GRACE_SECONDS)
        except (ImportError, AttributeError):
            continue
    raise AssertionError("ABORT_GRACE_SECONDS is in neither rerankd.server.drain nor rerankd.cli.serve")


# -- a process started the way the image starts it ---------------------------------------------------------


def _program(word: str) -> list[str]:
    if word == "rerankd":
        script = Path(sys.executable).parent / "rerankd"
        return [str(script)] if script.exists() else [sys.executable, "-m", "rerankd.cli.main"]
    if word == "python":
        return [sys.executable]
    return [shutil.which(word) or word]


def resolve_command(argv: list[str]) -> list[str]:
    """The image's argv, runnable here: `tini --` is dropped where tini isn't installed, `rerankd` is
    this interpreter's console script and `python` this interpreter."""
    if argv[0] == "tini":
        rest = argv[argv.index("--") + 1 :]
        if shutil.which("tini") is None:
            return resolve_command(rest)
        return [*_program("tini"), *argv[1 : argv.index("--") + 1], *resolve_command(rest)]
    return [*_program(argv[0]), *argv[1:]]


def _descendants(pid: int) -> list[int]:
    """Child processes, recursively (Linux /proc; empty elsewhere)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [p for c in children for p in (c, *_descendants(c))]


_RUNNING: list[ImageProcess] = []


@atexit.register
def _kill_leftovers() -> None:
    """A safety net for interrupted runs: no server outlives the test process."""
    for process in _RUNNING:
        process.kill()


class ImageProcess:
    """The image's ENTRYPOINT + CMD, run as a local process with the environment the image (and the
    orchestrator) would give it."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.argv = resolve_command(argv)
        self.env = dict(env)
        if self.argv[0].endswith("/tini"):
            self.env["TINI_SUBREAPER"] = "1"  # tini is not PID 1 here; as a subreaper it still reaps
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['RERANKD_PORT']}"

    def start(self, timeout: float = 90.0) -> ImageProcess:
        with open(self.log_path, "wb") as log:
            # A session of its own: kill() takes down the process group as well as the children.
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            _RUNNING.append(self)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.argv} exited with {self.proc.returncode}:\n{self.logs()}")
                try:
                    if client.get(self.url + "/ready").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.kill()
        raise AssertionError(f"not ready within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to the process, its process group and its descendants: tini moves rerankd into a
        process group of its own, and a SIGKILLed tini forwards nothing."""
        if self.proc is None:
            return
        children = _descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without RERANKD_*/HF_* settings, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKD_", "HF_"))}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(overrides)
    return env


def fake_hub_cache(model_dir: Path, hf_home: Path, repo_id: str) -> Path:
    """A Hugging Face cache holding `model_dir` as hub model `repo_id` at revision main, laid out the
    way `rerankd download` (huggingface_hub.snapshot_download) leaves it in an image."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def image_env(dockerfile: Dockerfile, hf_home: Path, *layers: Mapping[str, str]) -> dict[str, str]:
    """The container's environment: the image's ENV, then the orchestrator's (later layers win).

    Three things differ from a container, on purpose: PATH stays this machine's (the image's points at
    /opt/venv), HF_HOME is the test's cache, and the server binds 127.0.0.1 on a free port.
    """
    env = {k: v for k, v in dockerfile.env.items() if k != "PATH"}
    for layer in layers:
        env.update(layer)
    env.update(HF_HOME=str(hf_home), RERANKD_HOST="127.0.0.1", RERANKD_PORT=str(free_port()))
    return clean_env(**env)
