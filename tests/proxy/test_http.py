"""Plain HTTP through the proxy: routing, headers, bodies streamed both ways, SSE, errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import aiohttp
from proxy_harness import Stack, free_port


async def test_other_traffic_goes_to_the_inner_app(stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/spaces/alice/x") as resp:
            assert resp.status == 200
            assert await resp.text() == "controller:/spaces/alice/x"
        async with client.get(f"{stack.url}/apps/") as resp:
            assert await resp.text() == "controller:/apps/"


async def test_host_based_route(stack: Stack) -> None:
    route = stack.add()
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{stack.url}/hello", headers={"Host": stack.host(route.slug)}) as resp,
    ):
        assert resp.status == 200
        assert await resp.text() == "hello from upstream"


async def test_path_based_route_strips_prefix(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{stack.url}/apps/{route.space_id}/echo/a%2Fb?x=1&y=%20") as resp,
        ):
            data = await resp.json()
        assert data["path"] == "/echo/a%2Fb?x=1&y=%20"


async def test_path_based_route_keeps_prefix_for_streamlit_style_apps(stack: Stack) -> None:
    route = stack.add(strip_base_path=False)
    with stack.carried():
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{stack.url}/apps/{route.space_id}/echo?q=1") as resp:
                assert (await resp.json())["path"] == f"/apps/{route.space_id}/echo?q=1"
            host = {"Host": stack.host(route.slug)}
            async with client.get(f"{stack.url}/echo", headers=host) as resp:
                assert (await resp.json())["path"] == f"/apps/{route.space_id}/echo"


async def test_host_based_strips_base_path_links_built_by_gradio(stack: Stack) -> None:
    route = stack.add()
    async with aiohttp.ClientSession() as client:
        host = {"Host": stack.host(route.slug)}
        async with client.get(f"{stack.url}/apps/{route.space_id}/echo/x", headers=host) as resp:
            assert (await resp.json())["path"] == "/echo/x"


async def test_bare_prefix_redirects_to_trailing_slash(stack: Stack) -> None:
    route = stack.add()
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{stack.url}/apps/{route.space_id}?a=1", allow_redirects=False) as resp,
    ):
        assert resp.status == 307
        assert resp.headers["Location"] == f"/apps/{route.space_id}/?a=1"


async def test_forwarded_headers_and_session_cookie_dropped(stack: Stack) -> None:
    route = stack.add()
    headers = {
        "Host": stack.host(route.slug),
        "Cookie": "theme=dark; spaceport_session=SECRET; other=1",
        "Authorization": "Bearer app-token",
        "X-Forwarded-For": "10.0.0.1",
        "Connection": "keep-alive, X-Private-Hop",
        "X-Private-Hop": "drop me",
    }
    async with aiohttp.ClientSession() as client, client.get(f"{stack.url}/echo", headers=headers) as resp:
        got = {k.lower(): v for k, v in (await resp.json())["headers"]}
    assert "SECRET" not in got["cookie"]
    assert "theme=dark" in got["cookie"] and "other=1" in got["cookie"]
    assert got["authorization"] == "Bearer app-token"
    assert got["x-forwarded-host"] == stack.host(route.slug)
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert got["host"] == stack.host(route.slug)
    assert "x-private-hop" not in got


async def test_only_session_cookie_means_no_cookie_header(stack: Stack) -> None:
    route = stack.add()
    async with aiohttp.ClientSession() as client:
        headers = {"Cookie": "spaceport_session=SECRET"}
        async with client.get(f"{stack.url}/apps/{route.space_id}/echo", headers=headers) as resp:
            got = {k.lower() for k, _ in (await resp.json())["headers"]}
    assert "cookie" not in got


async def test_streamed_upload_is_not_buffered_and_arrives_intact(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        blocks = [os.urandom(64 * 1024) for _ in range(48)]  # 3 MiB, chunked, no Content-Length

        async def body():  # type: ignore[no-untyped-def]
            for block in blocks:
                yield block

        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{stack.url}/apps/{route.space_id}/upload", data=body()) as resp,
        ):
            data = await resp.json()
        assert data["size"] == 48 * 64 * 1024
        assert data["sha256"] == hashlib.sha256(b"".join(blocks)).hexdigest()
        assert data["chunked"] == "chunked"


async def test_fixed_length_upload(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        payload = os.urandom(200_000)
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{stack.url}/apps/{route.space_id}/upload", data=payload) as resp,
        ):
            data = await resp.json()
        assert data == {"size": 200_000, "sha256": hashlib.sha256(payload).hexdigest(), "chunked": ""}


async def test_streamed_download(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{stack.url}/apps/{route.space_id}/stream?n=300&size=10000") as resp,
        ):
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            body = await resp.read()
        assert len(body) == 3_000_000
        assert body[:10000] == b"\x00" * 10000 and body[-1:] == bytes([299 % 256])


async def test_sse_many_events_in_order(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{stack.url}/apps/{route.space_id}/sse?n=2000") as resp,
        ):
            assert resp.headers["Content-Type"] == "text/event-stream"
            text = await resp.text()
        data = [json.loads(line[6:])["n"] for line in text.splitlines() if line.startswith("data: ")]
        assert data == list(range(2000))


async def test_sse_events_arrive_before_the_stream_ends(stack: Stack) -> None:
    """An endless stream: reading the first events proves nothing waits for the end."""
    route = stack.add()
    with stack.carried():
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{stack.url}/apps/{route.space_id}/sse?forever=1") as resp,
        ):
            seen = []
            async for line in resp.content:
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:])["n"])
                if len(seen) == 3:
                    break
        assert seen == [0, 1, 2]


async def test_client_disconnect_closes_the_upstream_stream(stack: Stack) -> None:
    route = stack.add()
    before = stack.upstream_state.closed_streams
    with stack.carried():
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{stack.url}/apps/{route.space_id}/sse?forever=1") as resp,
        ):
            await resp.content.readline()
        for _ in range(500):
            if stack.upstream_state.closed_streams > before:
                break
            await asyncio.sleep(0.01)
        assert stack.upstream_state.closed_streams > before


async def test_redirect_location_gets_public_prefix(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{stack.url}/apps/{route.space_id}/redirect", allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == f"/apps/{route.space_id}/hello"
            host = {"Host": stack.host(route.slug)}
            async with client.get(f"{stack.url}/redirect", headers=host, allow_redirects=False) as resp:
                assert resp.headers["Location"] == "/hello"


async def test_head_request(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        async with (
            aiohttp.ClientSession() as client,
            client.head(f"{stack.url}/apps/{route.space_id}/hello") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len("hello from upstream"))


async def test_unknown_space_is_404_on_both_styles(stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/apps/nobody/nothing/") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "404 Not Found"
        async with client.get(f"{stack.url}/", headers={"Host": stack.host("nobody-nothing")}) as resp:
            assert resp.status == 404


async def test_refused_upstream_is_502_and_reported(stack: Stack) -> None:
    route = stack.add(target=f"http://127.0.0.1:{free_port()}")
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{stack.url}/apps/{route.space_id}/", headers={"Accept": "text/html"}) as resp,
    ):
        assert resp.status == 502
        page = await resp.text()
    assert "cannot connect to the app" in page
    assert any(space == route.space_id for space, _ in stack.health.failures)


async def test_concurrent_requests_share_the_pool(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        async with aiohttp.ClientSession() as client:

            async def one(i: int) -> str:
                async with client.get(f"{stack.url}/apps/{route.space_id}/echo/{i}") as resp:
                    return str((await resp.json())["path"])

            paths = await asyncio.gather(*(one(i) for i in range(200)))
        assert paths == [f"/echo/{i}" for i in range(200)]
