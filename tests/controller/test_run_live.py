"""Run and serve, end to end on the local runtime: real pushes, real Gradio/Streamlit apps, the proxy,
crashes, a controller restart, zero-downtime pushes, pause/restart, and sleep/wake."""

from __future__ import annotations

import asyncio
import html
import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import httpx
import pytest
from gradio_client import Client
from huggingface_hub import HfApi

from controller.config import Settings
from controller.db.models import utcnow
from controller.services.platform import Platform
from controller.services.sleep import sweep
from tests.support.gitrepo import commit_file, push, remote
from tests.support.server import TRUSTED_PATHS, LiveServer, make_server
from tests.support.spaces import app_pid, push_fixture, start_count, wait_stage

FAILS_500 = Path(__file__).parents[1] / "fixtures" / "apps" / "fails500"
RERUN_SCRIPT = b"Z\x00"  # Streamlit BackMsg{rerun_script: {}}: what a browser sends first


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("run"), SPACEPORT_PATH_APPS=TRUSTED_PATHS).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.create_user("alice")


def static_files(text: str) -> dict[str, str]:
    return {"README.md": "---\nsdk: static\nstartup_duration_timeout: 1m\n---\n", "index.html": text}


def host_get(server: LiveServer, slug: str, path: str = "/", headers: dict[str, str] | None = None,
             **kw: object) -> httpx.Response:
    headers = {**(headers or {}), "Host": f"{slug}.localhost:{server.port}"}
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def test_gradio_app_through_proxy_both_styles(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, "gradio", "alice", "greet", token)
    state = wait_stage(server, "alice/greet", {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR"})
    assert state["stage"] == "RUNNING", state
    client = Client(f"{server.url}/apps/alice/greet/", verbose=False)
    assert client.predict("Spaceport", api_name="/greet") == "Hello Spaceport!"
    page = host_get(server, "alice-greet")
    assert page.status_code == 200 and "gradio" in page.text.lower()
    config = host_get(server, "alice-greet", "/config")
    assert config.status_code == 200 and config.json()["mode"] == "interface"


def test_streamlit_session_over_websocket(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, "streamlit", "alice", "stream", token)
    assert wait_stage(server, "alice/stream", {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR"})["stage"] == "RUNNING"

    async def first_message(url: str, headers: dict[str, str]) -> bytes:
        async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=["streamlit"], headers=headers) as ws:
            await ws.send_bytes(RERUN_SCRIPT)
            message = await ws.receive(timeout=30)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            return bytes(message.data)

    ws_base = server.url.replace("http://", "ws://")
    assert asyncio.run(first_message(f"{ws_base}/apps/alice/stream/_stcore/stream", {"Origin": server.url}))
    host = f"alice-stream.localhost:{server.port}"
    assert asyncio.run(first_message(f"{ws_base}/_stcore/stream", {"Host": host, "Origin": f"http://{host}"}))


def test_killed_app_is_reported_then_restarted(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, static_files("<h1>v1</h1>"), "alice", "crashy", token)
    wait_stage(server, "alice/crashy", {"RUNNING"})
    pid = app_pid(server, "alice-crashy")
    os.killpg(pid, signal.SIGKILL)
    error = wait_stage(server, "alice/crashy", {"RUNTIME_ERROR"}, timeout=30)
    assert "exited" in str(error["errorMessage"])
    wait_stage(server, "alice/crashy", {"RUNNING"}, timeout=60)
    assert app_pid(server, "alice-crashy") != pid
    assert host_get(server, "alice-crashy").text == "<h1>v1</h1>"


def test_app_that_exits_at_once_ends_in_runtime_error_with_its_logs(server: LiveServer, token: str, tmp_path: Path) -> None:
    files = {"README.md": "---\nsdk: gradio\n---\n", "app.py": "print('boom: missing model weights')\nraise SystemExit(3)\n"}
    push_fixture(server, tmp_path, files, "alice", "exits", token)
    state = wait_stage(server, "alice/exits", {"RUNTIME_ERROR"}, timeout=240)
    deadline = time.monotonic() + 60
    while "keeps crashing" not in str(state["errorMessage"]) and time.monotonic() < deadline:
        time.sleep(0.5)
        state = wait_stage(server, "alice/exits", {"RUNTIME_ERROR"}, timeout=60)
    assert "keeps crashing" in str(state["errorMessage"])
    assert "boom: missing model weights" in str(state["errorMessage"])
    assert "exit code 3" in str(state["errorMessage"])
    assert host_get(server, "alice-exits").status_code == 503


def test_push_to_running_space_keeps_old_version_until_new_is_healthy(server: LiveServer, token: str, tmp_path: Path) -> None:
    repo = push_fixture(server, tmp_path, static_files("v1"), "alice", "swap", token)
    wait_stage(server, "alice/swap", {"RUNNING"})
    commit_file(repo, "index.html", "v2")
    push(repo, remote(server.url, "alice", "swap", "alice", token))
    bodies: list[str] = []
    stages: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = host_get(server, "alice-swap")
        assert response.status_code == 200, response.text
        bodies.append(response.text)
        stage = wait_stage(server, "alice/swap", {"RUNNING", "RUNNING_BUILDING", "RUNNING_APP_STARTING"}, seen=stages)
        if response.text == "v2" and stage["stage"] == "RUNNING":
            break
    assert bodies[0] == "v1" and bodies[-1] == "v2"
    assert set(bodies) == {"v1", "v2"} and bodies.index("v2") == len(bodies) - bodies[::-1].index("v1")
    assert {"RUNNING_BUILDING", "RUNNING_APP_STARTING"} & set(stages)


def test_pause_then_restart(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, static_files("pausable"), "alice", "pausable", token)
    wait_stage(server, "alice/pausable", {"RUNNING"})
    api = HfApi(endpoint=server.url, token=token)
    assert api.pause_space("alice/pausable").stage == "PAUSED"
    wait_stage(server, "alice/pausable", {"PAUSED"})
    time.sleep(1)  # a paused space is not woken by visits
    paused = host_get(server, "alice-pausable")
    assert paused.status_code == 503 and "paused" in paused.text.lower()
    assert api.get_space_runtime("alice/pausable").stage == "PAUSED"
    api.restart_space("alice/pausable")
    wait_stage(server, "alice/pausable", {"RUNNING"})
    assert host_get(server, "alice-pausable").text == "pausable"


def _sweep(server: LiveServer, ahead: timedelta) -> int:
    platform = Platform(Settings(data_dir=server.data_dir))
    try:
        return sweep(platform, now=utcnow() + ahead)
    finally:
        platform.dispose()


def test_light_sleep_freezes_and_a_visit_thaws(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, static_files("light"), "alice", "light", token)
    wait_stage(server, "alice/light", {"RUNNING"})
    starts = start_count(server, "alice-light")
    assert _sweep(server, timedelta(hours=49)) >= 1
    wait_stage(server, "alice/light", {"SLEEPING"})
    response = host_get(server, "alice-light")
    assert response.status_code == 200 and response.text == "light"
    wait_stage(server, "alice/light", {"RUNNING"})
    assert start_count(server, "alice-light") == starts  # thawed, not restarted


def test_deep_sleep_wakes_once_for_50_concurrent_visitors(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, static_files("deep"), "alice", "deep", token)
    wait_stage(server, "alice/deep", {"RUNNING"})
    starts = start_count(server, "alice-deep")
    _sweep(server, timedelta(hours=49))
    _sweep(server, timedelta(hours=49 + 2))
    wait_stage(server, "alice/deep", {"SLEEPING"})
    deadline = time.monotonic() + 30
    while app_alive(server, "alice-deep") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not app_alive(server, "alice-deep")

    async def visit(client: httpx.AsyncClient) -> tuple[int, str]:
        response = await client.get(f"{server.url}/", headers={"Host": f"alice-deep.localhost:{server.port}"})
        return response.status_code, response.text

    async def visitors() -> list[tuple[int, str]]:
        async with httpx.AsyncClient(timeout=120) as client:
            return list(await asyncio.gather(*(visit(client) for _ in range(50))))

    answers = asyncio.run(visitors())
    assert [status for status, _ in answers] == [200] * 50, [a for a in answers if a[0] != 200]
    assert start_count(server, "alice-deep") == starts + 1
    wait_stage(server, "alice/deep", {"RUNNING"})


def app_alive(server: LiveServer, slug: str) -> bool:
    try:
        os.kill(app_pid(server, slug), 0)
    except ProcessLookupError:
        return False
    return True


def test_controller_restart_keeps_apps_running(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, static_files("survivor"), "alice", "survivor", token)
    wait_stage(server, "alice/survivor", {"RUNNING"})
    pid = app_pid(server, "alice-survivor")
    server.stop(remove_apps=False)
    assert app_alive(server, "alice-survivor")
    server.start()
    wait_stage(server, "alice/survivor", {"RUNNING"})
    assert app_pid(server, "alice-survivor") == pid
    deadline = time.monotonic() + 20
    while host_get(server, "alice-survivor").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert host_get(server, "alice-survivor").text == "survivor"


def test_factory_rebuild_builds_again_without_cache_and_swaps(server: LiveServer, token: str, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, static_files("factory"), "alice", "factory", token)
    wait_stage(server, "alice/factory", {"RUNNING"})
    pid = app_pid(server, "alice-factory")
    HfApi(endpoint=server.url, token=token).restart_space("alice/factory", factory_reboot=True)
    stages: list[str] = []
    wait_stage(server, "alice/factory", {"RUNNING_BUILDING", "RUNNING_APP_STARTING"}, seen=stages)
    wait_stage(server, "alice/factory", {"RUNNING"}, seen=stages)
    log = httpx.get(f"{server.url}/api/spaces/alice/factory/logs/build", params={"follow": "false"}).text
    assert log.count("Build succeeded") == 2 and "no cache" in log.lower()
    assert app_pid(server, "alice-factory") != pid
    assert host_get(server, "alice-factory").text == "factory"


def test_app_answering_500_names_its_error_while_starting_then_fails(server: LiveServer, token: str, tmp_path: Path) -> None:
    """tests/fixtures/apps/fails500 answers 500 on / with a traceback whose last line names its secret."""
    secret = f"sk-live-{os.urandom(8).hex()}"
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{server.url}/api/repos/create", headers=auth, timeout=30,
                         json={"type": "space", "name": "fails500", "organization": "alice", "sdk": "gradio"})
    assert created.status_code == 200, created.text
    added = httpx.post(f"{server.url}/api/spaces/alice/fails500/secrets", headers=auth, timeout=30,
                       json={"key": "API_TOKEN", "value": secret})
    assert added.status_code == 200, added.text
    files = {f.name: f.read_text() for f in FAILS_500.iterdir() if f.is_file()}
    push_fixture(server, tmp_path, files, "alice", "fails500", token)
    problem = "The app answers HTTP 500 on /: TypeError: unhashable type: 'dict' (while rendering with token ***)"
    deadline = time.monotonic() + 240
    state = wait_stage(server, "alice/fails500", {"APP_STARTING", "RUNTIME_ERROR", "BUILD_ERROR"})
    # the answer may be seen before the traceback reaches the log ("...; see its logs."): the cause follows
    while state["stage"] == "APP_STARTING" and state["errorMessage"] != problem and time.monotonic() < deadline:
        time.sleep(0.1)
        state = wait_stage(server, "alice/fails500", {"APP_STARTING", "RUNTIME_ERROR", "BUILD_ERROR"})
    assert (state["stage"], state["errorMessage"]) == ("APP_STARTING", problem), state

    # what a visitor and the space page show meanwhile: the cause, its secret masked
    status = host_get(server, "alice-fails500", "/__spaceport__/status").json()
    waking = host_get(server, "alice-fails500", headers={"Accept": "text/html"})
    page = httpx.get(f"{server.url}/spaces/alice/fails500", timeout=30).text
    for shown in (str(status["message"]), html.unescape(waking.text), html.unescape(page)):
        assert problem in shown and secret not in shown, shown[-2000:]
    assert waking.status_code == 503

    final = wait_stage(server, "alice/fails500", {"RUNTIME_ERROR"}, timeout=120)
    message = str(final["errorMessage"])
    assert message.startswith(problem) and "20 s (startup_duration_timeout)" in message, final
    answer = host_get(server, "alice-fails500", headers={"Accept": "text/html"})
    assert answer.status_code == 503 and problem in html.unescape(answer.text), answer.text
    api_client = host_get(server, "alice-fails500")
    assert api_client.status_code == 503 and problem in api_client.json()["message"], api_client.text
    everything = message + answer.text + api_client.text + httpx.get(f"{server.url}/spaces/alice/fails500").text
    assert secret not in everything
