"""Issue 20: SIGTERM to `spaceport serve` (the serve process alone, as systemd or `kill` sends it) stops its
embedded worker too; a SIGKILLed controller leaves it running (tests/reliability/test_faults.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.support.server import make_server


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_to_serve_stops_its_embedded_worker(tmp_path: Path) -> None:
    server = make_server(tmp_path).start(timeout=120)
    try:
        assert server.proc is not None
        workers = children_of(server.proc.pid)
        assert workers, "serve started no embedded worker"
        os.kill(server.proc.pid, signal.SIGTERM)  # the serve process only, not its group
        assert server.proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30  # the worker's own warm shutdown
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers), f"embedded worker outlived serve: {workers}"
    finally:
        server.stop()
