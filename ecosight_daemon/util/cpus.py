"""How many CPUs this process may really use: its affinity mask (taskset, systemd's
CPUAffinity=) and its cgroup's CPU quota (CPUQuota=, a container's --cpus), not the
host's count. Workers sized from os.cpu_count() on an 8-core host under CPUQuota=200%
would start eight files at once in the memory of two."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cpu_max)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(cpu_max: Path = CGROUP_CPU_MAX) -> float | None:
    """cgroup v2's "quota period" as CPUs; None for "max" (no quota) or no such file."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None
