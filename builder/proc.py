"""Run a build subprocess, streaming its output lines, bounded by a deadline and a cancel event."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BUILD_ERROR, BuildCancelled, BuildFailure

TAIL_LINES = 30


@dataclass
class Result:
    returncode: int
    tail: list[str] = field(default_factory=list)

    def tail_text(self) -> str:
        return "\n".join(self.tail)


def run_streaming(
    argv: Sequence[str],
    *,
    log: Callable[[str], None],
    env: Mapping[str, str],
    deadline: float,
    cancel: threading.Event | None = None,
    cwd: Path | None = None,
) -> Result:
    """Run argv; every output line goes to `log`. Raises BuildFailure on timeout, BuildCancelled on cancel."""
    if cancel is not None and cancel.is_set():
        raise BuildCancelled()
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=dict(env), cwd=cwd, text=True, errors="replace", bufsize=1,
    )
    stop = threading.Event()
    reason: list[str] = []
    watchdog = threading.Thread(target=_watch, args=(proc, deadline, cancel, stop, reason), daemon=True)
    watchdog.start()
    result = Result(returncode=0)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            result.tail.append(line)
            del result.tail[:-TAIL_LINES]
            log(line)
        result.returncode = proc.wait()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watchdog.join()
    if reason == ["cancel"]:
        raise BuildCancelled()
    if reason == ["timeout"]:
        raise BuildFailure(BUILD_ERROR, f"{Path(argv[0]).name} took longer than the build time limit; reduce the requirements or ask the admin to raise it")
    return result


def _watch(proc: subprocess.Popen[str], deadline: float, cancel: threading.Event | None,
           stop: threading.Event, reason: list[str]) -> None:
    while not stop.wait(0.1):
        if cancel is not None and cancel.is_set():
            reason.append("cancel")
        elif time.monotonic() > deadline:
            reason.append("timeout")
        else:
            continue
        proc.kill()
        return
