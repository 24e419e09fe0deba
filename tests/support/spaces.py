"""Helpers for live tests: wait for a stage, push a fixture, find an instance's pid and start count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.support.gitrepo import make_repo, push, remote
from tests.support.server import LiveServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "spaces"


def runtime(server: LiveServer, space: str, token: str | None = None) -> dict[str, object]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return dict(httpx.get(f"{server.url}/api/spaces/{space}/runtime", headers=headers, timeout=10).json())


def wait_stage(server: LiveServer, space: str, stages: set[str], timeout: float = 240, token: str | None = None,
               seen: list[str] | None = None) -> dict[str, object]:
    """Poll the runtime JSON until the stage is one of `stages`; fail with the last state and logs."""
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        last = runtime(server, space, token)
        if seen is not None and (not seen or seen[-1] != last.get("stage")):
            seen.append(str(last.get("stage")))
        if last.get("stage") in stages:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{space} never reached {stages}: {last}\n{server.logs()[-4000:]}")


def push_fixture(server: LiveServer, tmp: Path, fixture: str | dict[str, str], owner: str, name: str, token: str) -> Path:
    files = FIXTURES / fixture if isinstance(fixture, str) else fixture
    repo = make_repo(tmp / f"{owner}-{name}", files)
    push(repo, remote(server.url, owner, name, owner, token))
    return repo


def instance_dirs(server: LiveServer) -> list[Path]:
    return sorted((server.data_dir / "runtime" / "instances").glob("sp-*"))


def instance_dir(server: LiveServer, slug: str) -> Path:
    found = [d for d in instance_dirs(server) if d.name.startswith(f"sp-{slug}-")]
    assert found, f"no instance for {slug}: {instance_dirs(server)}"
    return max(found, key=lambda d: d.stat().st_mtime)


def app_pid(server: LiveServer, slug: str) -> int:
    state = json.loads((instance_dir(server, slug) / "state.json").read_text())
    return int(state["pid"])


def start_count(server: LiveServer, slug: str) -> int:
    """How many times the local runtime started this space's instances (banners in its logs)."""
    total = 0
    for d in instance_dirs(server):
        if d.name.startswith(f"sp-{slug}-"):
            for log in d.glob("app.log*"):
                total += log.read_text(errors="replace").count("===== spaceport: starting")
    return total
