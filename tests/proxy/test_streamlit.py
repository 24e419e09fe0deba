"""A real Streamlit app (own uv venv, server.baseUrlPath set): page, health and /_stcore/stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from proxy_harness import STREAMLIT_APP, Stack, app_process, app_python, free_port

from controller.proxy import Route

pytestmark = pytest.mark.slow

# BackMsg{rerun_script: ClientState{}} (field 11, empty message): what the browser sends first;
# the server answers with ForwardMsgs (new_session, deltas...).
RERUN_SCRIPT = b"Z\x00"


@pytest.fixture(scope="module")
def streamlit_route(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Route]:
    python = app_python()
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("streamlit")
    (workdir / "app.py").write_text(STREAMLIT_APP)
    argv = [
        str(python),
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    env = {"STREAMLIT_SERVER_BASE_URL_PATH": "apps/alice/st"}
    health = f"http://127.0.0.1:{port}/apps/alice/st/_stcore/health"
    with app_process(argv, env, health, workdir):
        route = Route(
            space_id="alice/st", slug="alice-st", target=f"http://127.0.0.1:{port}", strip_base_path=False
        )
        stack.table.set(route)
        yield route
        stack.table.remove(route.space_id)


async def test_streamlit_page_and_health_both_styles(stack: Stack, streamlit_route: Route) -> None:
    with stack.carried():
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{stack.url}/apps/alice/st/_stcore/health") as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
            host = {"Host": stack.host("alice-st")}
            async with client.get(f"{stack.url}/_stcore/health", headers=host) as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
            async with client.get(f"{stack.url}/", headers={**host, "Accept": "text/html"}) as resp:
                assert resp.status == 200
                assert "<noscript>" in await resp.text()


@pytest.mark.parametrize("style", ["path", "host"])
async def test_streamlit_stream_websocket_gets_a_binary_forward_msg(
    stack: Stack, streamlit_route: Route, style: str
) -> None:
    """Streamlit checks Origin against Host (Tornado), so the proxy must pass the public Host through."""
    with stack.carried():
        if style == "path":
            url, headers = f"{stack.url}/apps/alice/st/_stcore/stream", {"Origin": stack.url}
        else:
            host = stack.host("alice-st")
            url, headers = f"{stack.url}/_stcore/stream", {"Host": host, "Origin": f"http://{host}"}
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(url, protocols=["streamlit"], headers=headers) as ws,
        ):
            assert ws.protocol == "streamlit"
            await ws.send_bytes(RERUN_SCRIPT)
            message = await ws.receive(timeout=30)
        assert message.type is aiohttp.WSMsgType.BINARY and message.data
