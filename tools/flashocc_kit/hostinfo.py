"""The CPUs this process may use: its affinity where the OS has one (a container or a job's cgroup), not the
machine's count."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
