"""What this process may use of the machine it runs on."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, which a SLURM job's or a container's
    cpuset narrows, not the machine's count (os.cpu_count: every core of a 64-core node for a job
    given 4 of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
