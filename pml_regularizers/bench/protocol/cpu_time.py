"""The CPU time a run spends: this process's, and that of its child processes (DataLoader workers)
once they have exited."""

from __future__ import annotations

import resource

__all__ = ["process_cpu_seconds"]


def process_cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its exited, waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
