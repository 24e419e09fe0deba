from __future__ import annotations

import threading
import time

import pytest

from builder.errors import BuildCancelled, BuildFailure
from builder.proc import run_streaming


def test_streams_lines_and_returns_code() -> None:
    lines: list[str] = []
    result = run_streaming(["sh", "-c", "echo one; echo two >&2; exit 3"], log=lines.append, env={"PATH": "/usr/bin:/bin"},
                           deadline=time.monotonic() + 60)
    assert lines == ["one", "two"] and result.returncode == 3 and result.tail_text() == "one\ntwo"


def test_cancel_kills_the_process() -> None:
    cancel = threading.Event()

    def log(line: str) -> None:
        if line == "started":
            cancel.set()

    with pytest.raises(BuildCancelled):
        run_streaming(["sh", "-c", "echo started; exec sleep 60"], log=log, env={"PATH": "/usr/bin:/bin"},
                      deadline=time.monotonic() + 120, cancel=cancel)


def test_deadline_kills_the_process() -> None:
    with pytest.raises(BuildFailure, match="time limit"):
        run_streaming(["sleep", "60"], log=lambda _line: None, env={"PATH": "/usr/bin:/bin"}, deadline=time.monotonic() - 1)
