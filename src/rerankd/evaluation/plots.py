"""The PNG reports of `rerankd eval` and `rerankd calibrate`, drawn with matplotlib off screen."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: no display, whatever the user's default backend is

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rerankd.evaluation.metrics import MEASURES  # noqa: E402

if TYPE_CHECKING:
    from rerankd.evaluation.experiment import System


def eval_report(path: Path, systems: list[System]) -> None:
    """Left: every metric per system. Right: each query's nDCG@10 for each variant against the first variant
    (against the first stage when there is one variant): points above the diagonal are queries it improved."""
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(13, 5.5))
    width = 0.8 / len(systems)
    x = np.arange(len(MEASURES))
    for i, system in enumerate(systems):
        bars.bar(x + i * width, [system.scores.means[m] for m in MEASURES], width, label=system.name)
    bars.set_xticks(x + width * (len(systems) - 1) / 2, list(MEASURES))
    bars.set_ylim(0, 1)
    bars.set_title("Mean over queries")
    bars.legend(fontsize="small")

    base = systems[1] if len(systems) > 2 else systems[0]
    queries = sorted(base.scores.per_query["nDCG@10"])
    for system in [s for s in systems[1:] if s is not base]:
        scatter.scatter([base.scores.per_query["nDCG@10"][q] for q in queries],
                        [system.scores.per_query["nDCG@10"].get(q, 0.0) for q in queries],
                        alpha=0.6, label=system.name)
    scatter.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    scatter.set_xlim(-0.02, 1.02)
    scatter.set_ylim(-0.02, 1.02)
    scatter.set_xlabel(f"nDCG@10 of {base.name}")
    scatter.set_ylabel("nDCG@10 of the variant")
    scatter.set_title(f"Per query, against {base.name}")
    scatter.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def precision_recall_plot(path: Path, precision: np.ndarray, recall: np.ndarray, chosen: tuple[float, float],
                          title: str) -> None:
    """The precision-recall curve of every cut, with the chosen threshold marked."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(recall, precision, drawstyle="steps-post")
    ax.scatter([chosen[1]], [chosen[0]], color="red", zorder=3, label="chosen threshold")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_plot(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Observed share of relevant pairs against the mean predicted score, per bin, for each score."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfectly calibrated")
    for name, (predicted, observed) in curves.items():
        ax.plot(predicted, observed, marker="o", label=name)
    ax.set_xlabel("mean score in bin")
    ax.set_ylabel("share relevant in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability diagram")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
