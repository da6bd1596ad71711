"""`rerankd eval`'s experiment: the first stage and each variant on the same candidates, compared."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rerankd.evaluation.data import Dataset
from rerankd.evaluation.first_stage import Run, write_run
from rerankd.evaluation.metrics import MEASURES, PairedTest, Scores, evaluate, paired_tests, top_changed
from rerankd.evaluation.rerank import rerank_run
from rerankd.reranker import Reranker
from rerankd.settings import Settings


@dataclass(frozen=True)
class Variant:
    """A named configuration; `flags` is how the user wrote it, for the report."""

    name: str
    settings: Settings
    flags: str = ""


@dataclass
class System:
    """One ranking of the candidates: the first stage, or a variant's reranking."""

    name: str
    run: Run
    scores: Scores
    variant: Variant | None = None
    pairs: int = 0
    pairs_per_second: float | None = None
    is_fixture: bool = False
    top10_changed: float | None = None  # against the first variant
    tests: dict[str, PairedTest] | None = None  # against the first variant

    @property
    def run_file(self) -> str:
        return f"run.{self.name}.trec"


def run_experiment(
    data: Dataset,
    qrels: dict[str, dict[str, int]],
    first_stage: tuple[str, Run],
    variants: list[Variant],
    on_batch: Callable[[int], None] | None = None,
    on_variant: Callable[[Variant], None] | None = None,
) -> list[System]:
    """The first stage, then every variant reranking its candidates; each variant compared with the first.

    Models are loaded one at a time and released before the next, so two variants never share the memory.
    """
    name, candidates = first_stage
    systems = [System(name, candidates, evaluate(qrels, candidates))]
    for variant in variants:
        if on_variant is not None:
            on_variant(variant)
        reranker = Reranker.from_settings(variant.settings)
        reranked = rerank_run(reranker, data, candidates, on_batch)
        systems.append(System(variant.name, reranked.run, evaluate(qrels, reranked.run), variant, reranked.pairs,
                              reranked.pairs_per_second, reranker.is_fixture))
        del reranker
        gc.collect()
    first = systems[1]
    for system in systems[2:]:
        system.top10_changed = top_changed(first.run, system.run)
        system.tests = paired_tests(first.scores, system.scores)
    return systems


def _settings_summary(settings: Settings) -> dict[str, Any]:
    """The settings that differ from the defaults: what the variant changed."""
    defaults = Settings()
    return {f.name: getattr(settings, f.name) for f in fields(settings)
            if getattr(settings, f.name) != getattr(defaults, f.name)}


def results(systems: list[System], about: dict[str, Any]) -> dict[str, Any]:
    """What results.json holds: the set-up, then each system's metrics and comparison with the first variant."""
    rows = []
    for i, system in enumerate(systems):
        row: dict[str, Any] = {"name": system.name, "kind": "first-stage" if i == 0 else "reranker",
                               "metrics": system.scores.means, "run_file": system.run_file}
        if system.variant is not None:
            row.update(flags=system.variant.flags, settings=_settings_summary(system.variant.settings),
                       is_fixture=system.is_fixture, pairs=system.pairs, pairs_per_second=system.pairs_per_second)
        if system.tests is not None:
            row["vs_first_variant"] = {
                "variant": systems[1].name,
                "top10_changed": system.top10_changed,
                "ttest_rel": {name: asdict(test) for name, test in system.tests.items()},
            }
        rows.append(row)
    return {**about, "measures": list(MEASURES), "systems": rows}


def write_outputs(out: Path, systems: list[System], summary: dict[str, Any]) -> None:
    """results.json, one TREC run file per system, and report.png."""
    from rerankd.evaluation.plots import eval_report

    out.mkdir(parents=True, exist_ok=True)
    for system in systems:
        write_run(out / system.run_file, system.run, system.name)
    (out / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    eval_report(out / "report.png", systems)
