"""A real Gradio app (own uv venv, GRADIO_ROOT_PATH set) used through the proxy by gradio_client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from gradio_client import Client
from proxy_harness import GRADIO_APP, PLATFORM_TOKEN, Stack, app_process, app_python, free_port

from controller.proxy import Route

pytestmark = pytest.mark.slow


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
    with stack.carried():
        client = Client(f"{stack.url}/apps/alice/demo/", verbose=False, download_files=False)
        assert client.predict("Ada", api_name="/greet") == "Hello Ada!"


def test_gradio_client_host_based_via_host_header(stack: Stack, gradio_route: Route) -> None:
    """*.localhost does not resolve in Python here, so the Host header carries the slug."""
    client = Client(
        stack.url, headers={"Host": stack.host("alice-demo")}, verbose=False, download_files=False
    )
    assert client.predict("Bob", api_name="/greet") == "Hello Bob!"


async def test_gradio_page_and_config_root_through_both_styles(stack: Stack, gradio_route: Route) -> None:
    with stack.carried():
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
    with stack.carried():
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
    stack.poll()  # on the haproxy plane, activity comes from its stats
    assert stack.activity.last_seen(gradio_route.space_id) is not None


# ---- issue 18.4: a visitor's platform token never reaches the app ---------------------------------
HEADERS_APP = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "gradio_headers" / "app.py"


@dataclass
class HeaderApp:
    public: Route
    private: Route
    origin: str
    log: Path

    def seen(self) -> list[dict[str, str]]:
        """Headers of every request the app received so far (lower-cased names; last value wins)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [{k.lower(): v for k, v in json.loads(line)["headers"]} for line in lines]


@pytest.fixture(scope="module")
def header_app(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeaderApp]:
    python = app_python()
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("gradio-headers")
    log = workdir / "headers.jsonl"
    env = {"PORT": str(port), "HEADERS_LOG": str(log), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    origin = f"http://127.0.0.1:{port}"
    with app_process([str(python), str(HEADERS_APP)], env, f"{origin}/config", workdir):
        public = Route(space_id="alice/headers", slug="alice-headers", target=origin)
        private = Route(space_id="alice/headers-private", slug="alice-headers-private", target=origin, private=True)
        for route in (public, private):
            stack.table.set(route)
        yield HeaderApp(public, private, origin, log)
        for route in (public, private):
            stack.table.remove(route.space_id)


def test_gradio_client_sends_the_token_but_the_app_never_sees_it(stack: Stack, header_app: HeaderApp) -> None:
    header_app.log.unlink(missing_ok=True)  # forget the start-up health checks
    direct = Client(header_app.origin, token=PLATFORM_TOKEN, verbose=False, download_files=False)
    assert direct.predict("Ada", api_name="/greet") == "Hello Ada!"
    sent = header_app.seen()  # what gradio_client sends on every call: the token, as X-HF-Authorization
    assert sent and all(h.get("x-hf-authorization") == f"Bearer {PLATFORM_TOKEN}" for h in sent)
    header_app.log.unlink()

    host = {"Host": stack.host(header_app.public.slug), "Cookie": "spaceport_session=S3SSION; spaceport_csrf=C"}
    client = Client(stack.url, headers=host, token=PLATFORM_TOKEN, verbose=False, download_files=False)
    assert client.predict("Bob", api_name="/greet") == "Hello Bob!"
    seen = header_app.seen()
    assert len(seen) >= 3  # config, info, queue join + data stream
    assert [h for h in seen if carries_credentials(h)] == []


def carries_credentials(headers: dict[str, str]) -> bool:
    return any(PLATFORM_TOKEN in value or "S3SSION" in value for value in headers.values())


def test_private_space_works_through_gradio_client_with_the_token_it_never_sees(
    stack: Stack, header_app: HeaderApp
) -> None:
    host = {"Host": stack.host(header_app.private.slug)}
    with pytest.raises(Exception):  # noqa: B017 - any refusal: without the token the space does not exist
        Client(stack.url, headers=host, verbose=False, download_files=False)
    header_app.log.unlink(missing_ok=True)
    client = Client(stack.url, headers=host, token=PLATFORM_TOKEN, verbose=False, download_files=False)
    assert client.predict("Cy", api_name="/greet") == "Hello Cy!"
    seen = header_app.seen()
    assert seen and [h for h in seen if carries_credentials(h)] == []
