"""Ending a process tree the way the end of a pod does, for the preemption and node-failure tests."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once, as the end of a pod does (torchrun's
    workers run in sessions of their own, so killing the process group would miss them)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        frontier = [c for c in children if c not in tree]
        tree.update(frontier)
    for sig in (signal.SIGSTOP, signal.SIGKILL):  # freeze all first: none acts on another's death
        for member in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, sig)
