"""Process facts from /proc: identity (pid + start time), liveness, descendants, signalling."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()  # fields after "pid (comm)": state is [0], starttime [19]


def start_time(pid: int) -> int | None:
    """Kernel start time in clock ticks: with the pid it identifies a process across pid reuse."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, started: int | None) -> bool:
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """All processes below pid (orphans inside a PID namespace stay below its init)."""
    result: list[int] = []
    stack = children(pid)
    while stack:
        current = stack.pop()
        result.append(current)
        stack += children(current)
    return result


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by pid and every descendant (some may have left the group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for child in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, sig)
