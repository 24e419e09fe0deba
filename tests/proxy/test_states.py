"""Route states through the real proxy: private, asleep (wake once), paused, unavailable; activity."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import websockets
from proxy_harness import Stack


async def test_private_space_is_404_without_access_and_served_with_it(stack: Stack) -> None:
    route = stack.add(private=True)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp:
            assert resp.status == 404
            body = await resp.text()
        async with client.get(f"{stack.url}/apps/nobody/nothing/hello") as resp:
            assert (resp.status, await resp.text()) == (404, body)  # indistinguishable from missing
        allowed = {"x-test-token": "letmein", "Host": stack.host(route.slug)}
        async with client.get(f"{stack.url}/hello", headers=allowed) as resp:
            assert resp.status == 200


async def test_asleep_50_concurrent_api_calls_wake_once_and_all_succeed(stack: Stack) -> None:
    route = stack.add(state="asleep")
    calls_before = stack.activator.calls
    async with aiohttp.ClientSession() as client:

        async def one() -> tuple[int, str]:
            async with client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp:
                return resp.status, await resp.text()

        results = await asyncio.gather(*(one() for _ in range(50)))
    assert results == [(200, "hello from upstream")] * 50
    assert stack.activator.calls - calls_before == 1
    current = stack.table.get(route.space_id)
    assert current is not None and current.state == "ready"


async def test_asleep_browser_gets_waking_page_that_follows_status(stack: Stack) -> None:
    route = stack.add(state="asleep", message="Waking up")
    calls_before = stack.activator.calls
    page_headers = {"Accept": "text/html,application/xhtml+xml", "Host": stack.host(route.slug)}
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/", headers=page_headers) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "5"
            page = await resp.text()
        assert "is waking up" in page and '"/__spaceport__/status"' in page
        status_url = f"{stack.url}/__spaceport__/status"
        async with client.get(status_url, headers={"Host": stack.host(route.slug)}) as resp:
            assert (await resp.json())["state"] == "waking"
        state = "waking"
        for _ in range(200):
            async with client.get(status_url, headers={"Host": stack.host(route.slug)}) as resp:
                state = (await resp.json())["state"]
            if state == "ready":
                break
            await asyncio.sleep(0.05)
        assert state == "ready"
        async with client.get(f"{stack.url}/hello", headers=page_headers) as resp:
            assert resp.status == 200
    assert stack.activator.calls - calls_before == 1


async def test_failed_wake_is_503_and_shown_in_status(stack: Stack) -> None:
    route = stack.add(state="asleep")
    stack.activator.fail.add(route.space_id)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp:
            assert resp.status == 503
            assert "instance exited with code 1" in (await resp.json())["message"]
        async with client.get(f"{stack.url}/apps/{route.space_id}/__spaceport__/status") as resp:
            status = await resp.json()
    assert status["state"] == "asleep" and "exited with code 1" in status["message"]


async def test_asleep_websocket_is_held_until_awake(stack: Stack) -> None:
    route = stack.add(state="asleep")
    async with websockets.connect(f"ws://127.0.0.1:{stack.proxy_port}/apps/{route.space_id}/ws") as ws:
        await ws.send("up?")
        assert await ws.recv() == "echo:up?"


async def test_paused_is_503_for_pages_and_api(stack: Stack) -> None:
    route = stack.add(state="paused")
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/apps/{route.space_id}/", headers={"Accept": "text/html"}) as resp:
            assert resp.status == 503
            assert "paused by its owner" in await resp.text()
        async with client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == "Space paused"


async def test_unavailable_shows_the_message(stack: Stack) -> None:
    route = stack.add(state="unavailable", message="RUNTIME_ERROR: exit code 3")
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp,
    ):
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "10"
        assert (await resp.json())["message"] == "RUNTIME_ERROR: exit code 3"
    stack.table.set(replace(route, state="ready"))
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp,
    ):
        assert resp.status == 200


async def test_activity_is_recorded_per_request_and_message_but_throttled(stack: Stack) -> None:
    route = stack.add()
    calls_before = stack.activity.calls
    async with aiohttp.ClientSession() as client:
        for _ in range(5):
            async with client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp:
                await resp.read()
        async with client.get(f"{stack.url}/apps/{route.space_id}/sse?n=20") as resp:
            await resp.read()
    async with websockets.connect(f"ws://127.0.0.1:{stack.proxy_port}/apps/{route.space_id}/ws") as ws:
        for i in range(10):
            await ws.send(str(i))
            await ws.recv()
    if stack.plane == "haproxy":  # HAProxy carried it all: its stats are the activity (one record per poll)
        stack.poll()
        assert stack.activity.calls - calls_before >= 1
    else:
        assert stack.activity.calls - calls_before >= 5 + 1 + 10 + 10  # requests, SSE chunks, ws both ways
    drained = stack.activity.drain()
    assert route.space_id in drained  # throttled to one pending timestamp per space
    assert stack.activity.last_seen(route.space_id) == drained[route.space_id]
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{stack.url}/apps/{route.space_id}/hello") as resp,
    ):
        await resp.read()
    stack.poll()
    assert route.space_id not in stack.activity.drain()  # within the 60 s interval: dropped
