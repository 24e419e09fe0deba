"""ZeroGPU end to end with the real `spaces` package (PyPI) in a real Gradio app on `spaceport serve`.

One server, two spaces with the same code: `@spaces.GPU(duration=5)` on a CPU function that reports its
pid and its parent's. On zero-a10g (a fake inventory: one device with a made-up UUID; there is no GPU
here) each call goes schedule -> fork -> /allow -> release through the device API, charged to the
signed-in caller; on cpu-basic the decorator is a no-op; a second zero-a10g space calling at the same
moment gets the one device after the first released it; pausing a zero space kills its worker. The apps run in the default sandbox (bubblewrap,
their own network namespace): the zero space reaches the device API's own listener (169.254.231.1, one
port, opened for zero-* instances only). The site's data plane is the default one (HAProxy when
installed): zero-* routes stay on the Python proxy, which is where X-IP-Token is added.

Attacker tests, from inside the sandboxes: the plain space cannot reach the device API at all; the zero
space reaches only the device API's paths on it (not /api/, not the UI), no other port of that address
or of the host, and a capability it made up gets 404."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from controller.runtimes import netns, procs
from controller.runtimes.sandbox import sandbox_status
from tests.support.server import TRUSTED_PATHS, LiveServer, make_server
from tests.support.spaces import app_pid, push_fixture, wait_stage
from tests.support.tiers import missing

APP = '''import os
import urllib.error
import urllib.request

import spaces
import gradio as gr


@spaces.GPU(duration=5)
def where(text: str) -> str:
    return f"{os.getpid()}|{os.getppid()}|{os.environ.get('CUDA_VISIBLE_DEVICES', '-')}|{text}"


def probe(url: str) -> str:
    """GET url from inside the sandbox: the HTTP status, or how it failed."""
    try:
        with urllib.request.urlopen(url, timeout=3) as res:
            return str(res.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"


@spaces.GPU(duration=5)
def hold(text: str) -> str:
    import time
    time.sleep(float(text))
    return "held"


def device_url(_text: str) -> str:
    return os.environ.get("SPACES_ZERO_DEVICE_API_URL", "-")


with gr.Blocks() as demo:
    box, out = gr.Textbox(), gr.Textbox()
    gr.Button("where").click(where, box, out, api_name="where")
    gr.Button("probe").click(probe, box, out, api_name="probe")
    gr.Button("url").click(device_url, box, out, api_name="device_url")
    gr.Button("hold").click(hold, box, out, api_name="hold")

if __name__ == "__main__":
    demo.launch()
'''
README = "---\nsdk: gradio\napp_file: app.py\nstartup_duration_timeout: 5m\n---\n"
FILES = {"README.md": README, "app.py": APP, "requirements.txt": "spaces\n"}
UUID = "GPU-00000000-0000-4000-8000-00000000fa4e"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    status = sandbox_status()
    if not status.available:
        missing(f"sandbox unavailable: {status.reason} ({status.fix})")
    extra = {"SPACEPORT_PATH_APPS": TRUSTED_PATHS}
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
    for name, hardware in (("zero", "zero-a10g"), ("plain", "cpu-basic"), ("zero2", "zero-a10g")):  # one after the other: the second
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
    assert int(parent) not in (1, app_pid(server, "carol-zero"))  # the worker's parent: the Gradio server, not
    # the sandbox's init (pid 1 of its PID namespace) nor the supervisor
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
    assert int(parent) == 1 and visible != UUID  # the Gradio server itself, child of the sandbox's init
    assert all(row[5] == UUID for row in leases(server)) and not any(row[0].endswith(pid) for row in leases(server))


def client(server: LiveServer, name: str, token: str) -> Client:
    return Client(f"{server.url}/apps/carol/{name}/", token=token, verbose=False, download_files=False)


def test_sandboxes_reach_the_device_api_only_from_zero_spaces_and_only_its_paths(server: LiveServer, tokens: dict[str, str]) -> None:
    zero, plain = client(server, "zero", tokens["carol"]), client(server, "plain", tokens["carol"])
    url = zero.predict("", api_name="/device_url")
    base = f"http://{netns.LISTENER_ADDRESS}:"
    assert url.startswith(base) and url.endswith("/") and "/zerogpu/" in url
    root = url.split("/zerogpu/")[0]
    assert zero.predict(url + "queue-size", api_name="/probe") == "200"
    for path in ("/", "/api/spaces", "/api/spaces/zero-gpu/quota", "/api/repos/create", "/admin", "/login",
                 "/oauth/authorize", "/spaces/carol/zero", "/spaces/carol/zero.git/info/refs"):
        assert zero.predict(root + path, api_name="/probe") == "404", path  # the listener serves nothing else
    capability = url.split("/zerogpu/")[1].rstrip("/")
    instance, _, mac = capability.rpartition(".")
    forged = [f"{instance}.{mac[::-1]}", f"{instance.replace('zero', 'plain')}.{mac}", f"other.{mac}"]
    for cap in forged:
        assert zero.predict(f"{root}/zerogpu/{cap}/queue-size", api_name="/probe") == "404", cap
    assert zero.predict(f"{base}{server.port}/", api_name="/probe").startswith("unreachable")  # other ports
    assert plain.predict("", api_name="/device_url") == "-"
    assert plain.predict(url + "queue-size", api_name="/probe").startswith("unreachable")  # not a zero space


def test_two_zero_spaces_on_one_device_are_served_in_turn_never_at_once(server: LiveServer, tokens: dict[str, str]) -> None:
    before = len(leases(server))
    clients = [client(server, name, tokens["carol"]) for name in ("zero", "zero2")]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: c.predict("2", api_name="/hold"), clients))
    assert results == ["held", "held"]
    with sqlite3.connect(server.data_dir / "spaceport.db") as db:
        rows = db.execute("SELECT instance, granted_at, released_at, outcome FROM zerogpu_leases WHERE id > ? ORDER BY "
                          "granted_at", (before,)).fetchall()
    assert len(rows) == 2 and len({r[0] for r in rows}) == 2 and all(r[3] == "released" for r in rows)
    assert rows[1][1] >= rows[0][2], f"the device was leased to both at once: {rows}"  # one after the other


def _worker_host_pid(server: LiveServer, slug: str, ns_pid: int) -> int:
    """The host pid of the process the app's PID namespace calls ns_pid (the package's forked worker)."""
    for pid in procs.descendants(app_pid(server, slug)):
        status = Path(f"/proc/{pid}/status").read_text()
        nspid = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()
        if nspid[-1] == str(ns_pid):
            return pid
    raise AssertionError(f"no process {ns_pid} in {slug}'s sandbox")


def test_pausing_a_zero_space_kills_the_packages_forked_worker(server: LiveServer, tokens: dict[str, str]) -> None:
    carol = client(server, "zero", tokens["carol"])
    carol.predict("warm", api_name="/where")  # a worker exists (this call may reuse the earlier one)
    ns_pid = next(row[2] for row in reversed(leases(server)) if row[2] is not None)
    worker = _worker_host_pid(server, "carol-zero", ns_pid)
    started = procs.start_time(worker)
    # the package's worker handles SIGTERM itself (it only closes its queue): stop must not rely on it
    caught = int(next(x for x in Path(f"/proc/{worker}/status").read_text().splitlines() if x.startswith("SigCgt:")).split()[1], 16)
    assert caught & (1 << (15 - 1))
    auth = {"authorization": f"Bearer {tokens['carol']}"}
    assert httpx.post(f"{server.url}/api/spaces/carol/zero/pause", headers=auth, timeout=30).status_code == 200
    wait_stage(server, "carol/zero", {"PAUSED"}, timeout=60)  # shown at once; the reconciler stops it next
    deadline = time.monotonic() + 30
    while procs.is_alive(worker, started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not procs.is_alive(worker, started), "the forked GPU worker outlived pause"
    assert httpx.post(f"{server.url}/api/spaces/carol/zero/restart", headers=auth, timeout=30).status_code == 200
    assert wait_stage(server, "carol/zero", {"RUNNING", "RUNTIME_ERROR"})["stage"] == "RUNNING"
    pid = client(server, "zero", tokens["carol"]).predict("back", api_name="/where").split("|")[0]
    assert leases(server)[-1][2] == int(pid)  # a new worker, confirmed by its own /allow
