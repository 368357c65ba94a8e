"""Worker settings whose defaults depend on the machine."""

from __future__ import annotations

import os
from pathlib import Path

from kubemate_worker.settings import WorkerConfig, _cores


def test_a_container_cpu_quota_bounds_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two calls at once, not one per host core
    assert _cores(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("max 100000\n")
    assert _cores(cpu_max) == len(os.sched_getaffinity(0))
    assert _cores(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_in_process_calls_at_once_match_the_host_wide_limit() -> None:
    config = WorkerConfig()
    assert config.embed_threads == 1
    assert config.embed_global_limits["sentence_transformers"] == (
        config.in_process_embed_concurrency
    )
