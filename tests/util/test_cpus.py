"""Workers are sized from the CPUs the process may use, not the host's count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ecosight_daemon.util.cpus import cgroup_cpu_quota, usable_cpus


def test_an_affinity_mask_limits_the_workers() -> None:
    ask = [sys.executable, "-c", "from ecosight_daemon.util.cpus import usable_cpus; print(usable_cpus())"]
    pinned = subprocess.run(["taskset", "-c", "0", *ask], capture_output=True, text=True, check=True)
    assert pinned.stdout.strip() == "1"
    assert 1 <= usable_cpus()


def test_a_cgroup_quota_limits_the_workers(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"  # the cgroup v2 file, as systemd's CPUQuota=150% writes it
    cpu_max.write_text("150000 100000\n")
    assert cgroup_cpu_quota(cpu_max) == 1.5
    assert usable_cpus(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("50000 100000\n")
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_quota(cpu_max) is None and usable_cpus(cpu_max) == len(os.sched_getaffinity(0))
