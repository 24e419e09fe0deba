"""Issue 20: SIGTERM to `spaceport serve` (the serve process alone, as systemd or `kill` sends it) stops its
embedded worker too; a SIGKILLed controller leaves it running (tests/reliability/test_faults.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from controller.runtimes import procs
from tests.support.server import make_server


def test_sigterm_to_serve_stops_its_embedded_worker(tmp_path: Path) -> None:
    server = make_server(tmp_path).start(timeout=120)
    try:
        assert server.proc is not None
        workers = {pid: procs.start_time(pid) for pid in procs.children(server.proc.pid)}
        assert workers, "serve started no embedded worker"
        os.kill(server.proc.pid, signal.SIGTERM)  # the serve process only, not its group
        assert server.proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30  # the worker's own warm shutdown
        while any(procs.is_alive(pid, started) for pid, started in workers.items()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(procs.is_alive(pid, started) for pid, started in workers.items()), f"embedded worker outlived serve: {workers}"
    finally:
        server.close()
