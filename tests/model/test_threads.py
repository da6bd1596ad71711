"""Model threads: the cores this process may use, shared out over worker processes."""

from __future__ import annotations

import os

from rerankd import Reranker
from rerankd.model import threads
from rerankd.model.threads import available_cores, model_threads


def test_available_cores_follows_the_affinity_mask():
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_a_cgroup_quota_caps_the_cores(tmp_path, monkeypatch):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs: round up, a fraction of a core is still a core
    monkeypatch.setattr(threads, "_CGROUP_V2_MAX", quota)
    assert available_cores() == min(2, len(os.sched_getaffinity(0)))
    quota.write_text("max 100000\n")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_workers_share_the_cores_and_an_explicit_count_wins(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    assert model_threads(None) == 16
    assert model_threads(None, workers=4) == 4
    assert model_threads(None, workers=32) == 1
    assert model_threads(3, workers=4) == 3


def test_the_engine_applies_the_thread_count(xlmr_dir):
    import torch

    before = torch.get_num_threads()
    try:
        Reranker(str(xlmr_dir), device="cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
