"""A real Gradio app (own uv venv, GRADIO_ROOT_PATH set) used through the proxy by gradio_client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from gradio_client import Client
from proxy_harness import GRADIO_APP, Stack, app_process, app_python, free_port

from controller.proxy import Route

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("proxy-gradio")]


@pytest.fixture(scope="module")
def gradio_route(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Route]:
    python = app_python()
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("gradio")
    (workdir / "app.py").write_text(GRADIO_APP.format(port=port))
    env = {"GRADIO_ROOT_PATH": "/apps/alice/demo", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with app_process([str(python), "app.py"], env, f"http://127.0.0.1:{port}/config", workdir):
        route = Route(space_id="alice/demo", slug="alice-demo", target=f"http://127.0.0.1:{port}")
        stack.table.set(route)
        yield route
        stack.table.remove(route.space_id)


def test_gradio_client_path_based(stack: Stack, gradio_route: Route) -> None:
    client = Client(f"{stack.url}/apps/alice/demo/", verbose=False, download_files=False)
    assert client.predict("Ada", api_name="/greet") == "Hello Ada!"


def test_gradio_client_host_based_via_host_header(stack: Stack, gradio_route: Route) -> None:
    """*.localhost does not resolve in Python here, so the Host header carries the slug."""
    client = Client(
        stack.url, headers={"Host": stack.host("alice-demo")}, verbose=False, download_files=False
    )
    assert client.predict("Bob", api_name="/greet") == "Hello Bob!"


async def test_gradio_page_and_config_root_through_both_styles(stack: Stack, gradio_route: Route) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/apps/alice/demo/", headers={"Accept": "text/html"}) as resp:
            assert resp.status == 200
            assert "<html" in (await resp.text()).lower()
        async with client.get(f"{stack.url}/apps/alice/demo/config") as resp:
            assert (await resp.json())["root"] == f"{stack.url}/apps/alice/demo"
        host = {"Host": stack.host("alice-demo")}
        async with client.get(f"{stack.url}/config", headers=host) as resp:
            root = (await resp.json())["root"]
        assert root == f"http://{stack.host('alice-demo')}/apps/alice/demo"
        async with client.get(f"{stack.url}/apps/alice/demo/config", headers=host) as resp:
            assert resp.status == 200  # links built from that root come back through the host route


async def test_gradio_sse_queue_through_proxy_records_activity(stack: Stack, gradio_route: Route) -> None:
    """The raw queue protocol: POST /queue/join then stream /queue/data (SSE) until process_completed."""
    base = f"{stack.url}/apps/alice/demo/gradio_api"
    stack.activity.forget(gradio_route.space_id)
    async with aiohttp.ClientSession() as client:
        join = {
            "data": ["Eve"],
            "fn_index": 0,
            "session_hash": "proxytest01",
            "event_data": None,
            "trigger_id": None,
        }
        async with client.post(f"{base}/queue/join", json=join) as resp:
            assert resp.status == 200, await resp.text()
        events = []
        async with client.get(f"{base}/queue/data?session_hash=proxytest01") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async with asyncio.timeout(60):
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        events.append(line.decode())
                        if "process_completed" in events[-1]:
                            break
    assert "Hello Eve!" in events[-1]
    assert stack.activity.last_seen(gradio_route.space_id) is not None
