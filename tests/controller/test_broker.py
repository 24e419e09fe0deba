"""A task round-trips through a real Celery worker on each broker: the embedded one and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import Settings
from controller.tasks import make_celery
from tests.support.server import ROOT, server_env


@pytest.fixture(params=["embedded", "redis"])
def broker_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = server_env(tmp_path / "data")
    if request.param == "redis":
        env["SPACEPORT_BROKER_URL"] = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/5"
    return env


@pytest.fixture
def worker(broker_env: dict[str, str]) -> Iterator[dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "worker", "--concurrency", "1"],
                            env=broker_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    yield broker_env
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_task_round_trip(worker: dict[str, str]) -> None:
    settings = Settings(data_dir=Path(worker["SPACEPORT_DATA_DIR"]), broker_url=worker.get("SPACEPORT_BROKER_URL", ""))
    app = make_celery(settings)
    results = [app.send_task("spaceport.ping", args=[str(i)]) for i in range(5)]
    answers = [r.get(timeout=60) for r in results]
    assert [a.split(":")[1] for a in answers] == ["0", "1", "2", "3", "4"]
    assert all(a.startswith("pong:") for a in answers)
    assert int(answers[0].split(":")[2]) != os.getpid()


def test_embedded_broker_loses_no_message(tmp_path: Path) -> None:
    """300 messages through the filesystem broker: none lost, none read half-written."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    app = make_celery(settings)
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("stress")
        for i in range(300):
            queue.put({"n": i})
        seen = set()
        while len(seen) < 300:
            message = queue.get(timeout=5)
            seen.add(message.payload["n"])
            message.ack()
        queue.close()
    assert seen == set(range(300))
