"""The sweep's plot: throughput and latency against concurrency (or arrival rate). Needs matplotlib, which the
`bench` extra installs (`pip install 'rerankd[bench]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerankd.errors import ErrorKind, RerankdError

INSTALL_HINT = "--plot needs matplotlib: pip install 'rerankd[bench]'"


def require_matplotlib() -> None:
    """Fail before a run whose plot could not be drawn, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RerankdError(ErrorKind.INVALID_INPUT, INSTALL_HINT) from None


def plot_sweep(mode: str, records: list[dict[str, Any]], path: str | Path, title: str) -> None:
    """Write a PNG (or any format matplotlib knows by the suffix) with two panels sharing the x axis:
    pairs/s answered 200, and p50/p95/p99 latency of those answers.

    Args:
        mode: "concurrency" or "rate", the key of each record's level.
        records: The sweep's `level_record`s.
        path: Where to write the image.
        title: The figure's title (the endpoint and workload).
    """
    require_matplotlib()
    # A bare Figure, not pyplot: no GUI backend, no global state.
    from matplotlib.figure import Figure

    levels = [r[mode] for r in records]
    figure = Figure(figsize=(7, 6), layout="constrained")
    throughput, latency = figure.subplots(2, 1, sharex=True)
    throughput.plot(levels, [r["summary"]["goodput_pairs_per_s"] for r in records], marker="o")
    throughput.set_ylabel("pairs/s (200s)")
    throughput.set_ylim(bottom=0)
    for q in ("p50", "p95", "p99"):
        values = [r["summary"]["latency_ok_s"][q] for r in records]
        latency.plot(levels, [float("nan") if v is None else v * 1000 for v in values], marker="o", label=q)
    latency.set_ylabel("latency of 200s (ms)")
    latency.set_ylim(bottom=0)
    latency.legend()
    latency.set_xlabel("concurrent clients (closed loop)" if mode == "concurrency" else "arrivals/s (Poisson)")
    if len(levels) > 1 and max(levels) / min(levels) >= 8:
        latency.set_xscale("log", base=2 if mode == "concurrency" else 10)
    latency.set_xticks(levels, [f"{v:g}" for v in levels])
    for axes in (throughput, latency):
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110)
