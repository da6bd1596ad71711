"""How many CPU threads the model may use, so that workers and tokenizers don't oversubscribe the cores.

Libraries default to one thread per *host* core. In a container limited to 2 of 64
cores, or with 4 worker processes on 8 cores, that means several threads per real
core fighting for it, which costs more than it gives.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores() -> int:
    """Cores this process may run on: the CPU affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_V2_MAX.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def model_threads(requested: int | None, workers: int = 1) -> int:
    """Intra-op threads for one model: what was asked for, else an equal share of the cores per worker process.

    Tokenization is not given cores of its own: it takes a few percent of the time of
    a forward pass and overlaps it, so the model keeps every core of its share.
    """
    if requested is not None:
        return requested
    return max(1, available_cores() // max(1, workers))
