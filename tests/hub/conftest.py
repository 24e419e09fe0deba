"""Hub API tests: a live `spaceport serve` driven through the real huggingface_hub client."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import LiveServer, make_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pipeline: needs the build/run pipeline (spaces reach RUNNING)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("hub")).start()
    yield srv
    srv.close()
    reap(srv.data_dir)


def reap(data_dir: Path) -> None:
    """End what this server left running: app instances (they outlive the controller by design, so a
    restart can adopt them) and a worker that ignored SIGTERM. Matched by the server's data dir only."""
    pids = _pids_using(str(data_dir).encode())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (pids := [p for p in pids if _alive(p)]):
            time.sleep(0.1)


def _pids_using(marker: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            blob = Path(f"/proc/{entry}/cmdline").read_bytes() + Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker + b"/" in blob or blob.endswith(marker) or marker + b"\0" in blob:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    return {name: server.create_user(name) for name in ("alice", "bob")}
