"""ZeroGPU end to end with the real `spaces` package (PyPI) in a real Gradio app on `spaceport serve`.

One server, two spaces with the same code: `@spaces.GPU(duration=5)` on a CPU function that reports its
pid and its parent's. On zero-a10g (a fake inventory: one device with a made-up UUID; there is no GPU
here) each call goes schedule -> fork -> /allow -> release through the device API, charged to the
signed-in caller; on cpu-basic the decorator is a no-op. The app runs unsandboxed (SPACEPORT_SANDBOX=none):
the sandbox's network namespace lets an app open no connection to the host, the device API included
(README, ZeroGPU, says what the sandboxed path needs). The site's data plane is the default one (HAProxy
when installed): zero-* routes stay on the Python proxy, which is where X-IP-Token is added."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import httpx
import pytest
from gradio_client import Client

from tests.support.server import TRUSTED_PATHS, LiveServer, make_server
from tests.support.spaces import app_pid, push_fixture, wait_stage

APP = '''import os

import spaces
import gradio as gr


@spaces.GPU(duration=5)
def where(text: str) -> str:
    return f"{os.getpid()}|{os.getppid()}|{os.environ.get('CUDA_VISIBLE_DEVICES', '-')}|{text}"


demo = gr.Interface(fn=where, inputs="text", outputs="text", api_name="where")

if __name__ == "__main__":
    demo.launch()
'''
README = "---\nsdk: gradio\napp_file: app.py\nstartup_duration_timeout: 5m\n---\n"
FILES = {"README.md": README, "app.py": APP, "requirements.txt": "spaces\n"}
UUID = "GPU-00000000-0000-4000-8000-00000000fa4e"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    extra = {"SPACEPORT_PATH_APPS": TRUSTED_PATHS, "SPACEPORT_SANDBOX": "none", "SPACEPORT_ALLOW_UNSANDBOXED": "true"}
    srv = make_server(tmp_path_factory.mktemp("zerogpu"), **extra).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def tokens(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    found = {name: server.create_user(name) for name in ("carol", "dave")}
    server.cli("zerogpu", "add-device", "nvidia-a10g", "--index", "0", "--uuid", UUID)
    server.cli("zerogpu", "defaults", "--signed-in", "120", "--anonymous", "10")
    server.cli("zerogpu", "quota", "dave", "0")
    tmp = tmp_path_factory.mktemp("repos")
    for name, hardware in (("zero", "zero-a10g"), ("plain", "cpu-basic")):  # one after the other: the second
        res = httpx.post(f"{server.url}/api/repos/create", headers={"authorization": f"Bearer {found['carol']}"},
                         json={"type": "space", "name": name, "space_sdk": "gradio", "hardware": hardware}, timeout=30)
        assert res.status_code == 200, res.text
        push_fixture(server, tmp, FILES, "carol", name, found["carol"])  # build reuses the first's environment
        state = wait_stage(server, f"carol/{name}", {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR"})
        assert state["stage"] == "RUNNING", state
    return found


def leases(server: LiveServer) -> list[tuple[str, int, int | None, float, str, str]]:
    with sqlite3.connect(server.data_dir / "spaceport.db") as db:
        return db.execute("SELECT subject, duration, pid, charged_seconds, outcome, device_uuid FROM zerogpu_leases "
                          "ORDER BY id").fetchall()


def used(server: LiveServer, token: str) -> float:
    res = httpx.get(f"{server.url}/api/spaces/zero-gpu/quota", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert res.status_code == 200, res.text
    return float(res.json()["usedSeconds"])


def test_gpu_calls_run_in_a_forked_worker_with_a_lease_charged_to_the_caller(server: LiveServer, tokens: dict[str, str]) -> None:
    client = Client(f"{server.url}/apps/carol/zero/", token=tokens["carol"], verbose=False, download_files=False)
    pid, parent, visible, echo = client.predict("one", api_name="/where").split("|")
    # without torch the package's torch.init is a no-op (with torch it sets CUDA_VISIBLE_DEVICES=<UUID> in the
    # fork); what the worker sees is the runtime's own value for a CPU instance
    assert echo == "one" and visible != UUID
    assert int(parent) != app_pid(server, "carol-zero")  # the worker's parent is the Gradio server
    (subject, duration, allowed_pid, charged, outcome, device), = leases(server)
    assert (duration, allowed_pid, outcome, device) == (5, int(pid), "released", UUID)
    assert subject.startswith("user:") and 0 < charged <= 5
    first_used = used(server, tokens["carol"])
    assert first_used == pytest.approx(charged, abs=1e-3)

    again = client.predict("two", api_name="/where").split("|")
    assert again[:2] == [pid, parent]  # the idle worker was reused: no new fork, no second /allow
    second = leases(server)[-1]
    assert second[2] is None and second[4] == "released" and len(leases(server)) == 2
    assert used(server, tokens["carol"]) > first_used


def test_exhausted_quota_gets_the_packages_own_message(server: LiveServer, tokens: dict[str, str]) -> None:
    client = Client(f"{server.url}/apps/carol/zero/", token=tokens["dave"], verbose=False, download_files=False)
    before = len(leases(server))
    with pytest.raises(Exception, match=r"You have exceeded your free ZeroGPU quota \(5s requested vs\. 0s left\)"):
        client.predict("x", api_name="/where")
    assert len(leases(server)) == before  # refused before any device was leased


def test_the_same_app_on_a_plain_flavor_runs_without_zerogpu(server: LiveServer, tokens: dict[str, str]) -> None:
    client = Client(f"{server.url}/apps/carol/plain/", token=tokens["dave"], verbose=False, download_files=False)
    pid, parent, visible, _ = client.predict("cpu", api_name="/where").split("|")
    assert int(parent) == app_pid(server, "carol-plain") and visible != UUID  # the app process itself
    assert all(row[5] == UUID for row in leases(server)) and not any(row[0].endswith(pid) for row in leases(server))
