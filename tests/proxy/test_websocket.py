"""WebSockets through the proxy: text, binary, subprotocols, close codes, denial."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import websockets
from proxy_harness import Stack, free_port


async def test_echo_text_and_binary_path_based(stack: Stack) -> None:
    route = stack.add()
    url = f"ws://127.0.0.1:{stack.proxy_port}/apps/{route.space_id}/ws"
    with stack.carried():
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"echo:\x00\x01"
            big = bytes(range(256)) * 8192  # 2 MiB frame
            await ws.send(big)
            assert await ws.recv() == b"echo:" + big


async def test_host_based_with_subprotocol(stack: Stack) -> None:
    route = stack.add()
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            f"{stack.url}/ws", headers={"Host": stack.host(route.slug)}, protocols=("chat.v1",)
        ) as ws,
    ):
        assert ws.protocol == "chat.v1"
        await ws.send_str("x")
        assert await ws.receive_str() == "echo:x"


async def test_upstream_close_code_and_reason_reach_the_client(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        async with websockets.connect(f"ws://127.0.0.1:{stack.proxy_port}/apps/{route.space_id}/ws") as ws:
            await ws.send("close-me")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")


async def test_200_concurrent_sockets(stack: Stack) -> None:
    route = stack.add()
    url = f"ws://127.0.0.1:{stack.proxy_port}/apps/{route.space_id}/ws"
    with stack.carried():

        async def one(i: int) -> str:
            async with websockets.connect(url) as ws:
                await ws.send(str(i))
                return str(await ws.recv())

        got = await asyncio.gather(*(one(i) for i in range(200)))
        assert got == [f"echo:{i}" for i in range(200)]


async def test_unknown_space_websocket_is_rejected_with_404(stack: Stack) -> None:
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with websockets.connect(f"ws://127.0.0.1:{stack.proxy_port}/apps/nobody/none/ws"):
            pass
    assert denied.value.response.status_code == 404


async def test_upstream_refusing_the_handshake_passes_its_status(stack: Stack) -> None:
    route = stack.add()
    with stack.carried():
        with pytest.raises(websockets.InvalidStatus) as denied:
            async with websockets.connect(f"ws://127.0.0.1:{stack.proxy_port}/apps/{route.space_id}/not-a-ws"):
                pass
        assert denied.value.response.status_code == 404


async def test_dead_upstream_websocket_is_502(stack: Stack) -> None:
    route = stack.add(target=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with websockets.connect(f"ws://127.0.0.1:{stack.proxy_port}/apps/{route.space_id}/ws"):
            pass
    assert denied.value.response.status_code == 502
