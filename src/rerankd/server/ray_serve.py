"""rerankd as a Ray Serve application: the same FastAPI app in autoscaled replicas.

Each replica builds its own ModelRegistry (model, scheduler, in-process
LRU); a Redis `--cache-url` is shared by all of them. `rerankd serve --ray` runs
it in the foreground; `serve run rerankd.server.ray_serve:build_app` and
`serve deploy` (deploy/ray/serve_config.yaml) take the `RERANKD_*` environment.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from rerankd.server.app import create_app
from rerankd.server.metrics import Metrics
from rerankd.server.models import ModelRegistry, State, parse_model_specs
from rerankd.settings import Settings, settings_from_env

APP_NAME = "rerankd"


@serve.ingress()
class Rerankd:
    """One replica. Ray starts routing to it only after the app's start-up, which waits for the models."""

    def __init__(self, settings: Settings, specs: list[tuple[str, str]]) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = ModelRegistry(settings, specs, self.metrics)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Ray stops routing to a replica before it shuts it down and waits for its requests
        # (graceful_shutdown_timeout_s), so the app doesn't drain on signals itself.
        return create_app(self.settings, self.registry, self.metrics, wait_for_models=True)

    def check_health(self) -> None:
        """Ray's health check is /ready: a replica whose models are not serving gets replaced."""
        if self.registry.state is not State.READY:
            raise RuntimeError(f"models not ready: {self.registry.state.value} {self.registry.error or ''}".strip())


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Replica count, autoscaling and resources of the deployment, from the settings."""
    return {
        "autoscaling_config": {
            "min_replicas": settings.ray_min_replicas,
            "initial_replicas": max(1, settings.ray_min_replicas),
            "max_replicas": settings.ray_max_replicas,
            "target_ongoing_requests": settings.ray_target_ongoing_requests,
        },
        # Room above the autoscaling target, so a replica holds enough requests at once to batch them.
        "max_ongoing_requests": max(1, round(2 * settings.ray_target_ongoing_requests)),
        "ray_actor_options": {
            "num_cpus": settings.threads or 1,
            "num_gpus": 1 if settings.device.startswith("cuda") else 0,
            # Ray caps OMP threads at num_cpus; the Rust tokenizer's rayon pool would still take every core.
            "runtime_env": {"env_vars": {"RAYON_NUM_THREADS": str(settings.threads or 1)}},
        },
        "graceful_shutdown_timeout_s": settings.drain_timeout,
    }


def rerankd_application(specs: list[tuple[str, str]], settings: Settings) -> Application:
    # The model uses the CPUs the replica reserved, not a share of the whole node's cores.
    replica_settings = settings.with_changes(threads=settings.threads or 1)
    return serve.deployment(Rerankd).options(**deployment_options(settings)).bind(replica_settings, specs)


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for `serve run` / `serve deploy`: settings come from `RERANKD_*`, as for the CLI.

    Set them in the shell for `serve run`, or under runtime_env.env_vars in a Serve config file.
    """
    if args:
        raise ValueError(
            f"rerankd takes its settings from RERANKD_* environment variables, not application args "
            f"({', '.join(args)}); see docs/scaling.md"
        )
    models, settings = settings_from_env()
    return rerankd_application(parse_model_specs(models), settings)
