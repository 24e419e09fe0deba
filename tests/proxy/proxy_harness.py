"""Real servers for the proxy tests: an aiohttp upstream and uvicorn serving ProxyMiddleware.

Both run on their own event loop in a background thread, on loopback sockets bound to port 0;
tests talk to them through real sockets from the test's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import uv as uv_bin
import uvicorn
from aiohttp import WSMsgType, web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute

from controller.dataplane.haproxy import HAProxyProcess, Layout
from controller.dataplane.plane import DataPlane
from controller.proxy import ProxyMiddleware, Route, RouteTable, ThrottledActivity
from controller.proxy.appauth import AppAuth, app_cookie_secret
from controller.proxy.isolation import PathMode
from tests.support.procs import stop_process

APPS_DOMAIN = "apps.localhost"
TEST_KEY = "proxy-test-key"
HOSTILE_SET_COOKIES = (
    "spaceport_session=forged; Path=/",
    "spaceport_session=forged; Domain=localhost; Path=/; HttpOnly",
    "SPACEPORT_SESSION=forged; Path=/apps",
    "__Host-spaceport_session=forged; Path=/; Secure",
    "__Secure-spaceport_csrf=forged; Path=/; Secure",
    "spaceport_csrf=forged",
    " spaceport_app_session =forged; Max-Age=999999",
    "theme=dark; Path=/",
)


def bind_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopThread:
    """An event loop in a daemon thread; `call(coro)` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# ---- upstream ---------------------------------------------------------------------------------
@dataclass
class UpstreamState:
    open_streams: int = 0
    closed_streams: int = 0
    uploads: list[int] = field(default_factory=list)


def make_upstream(state: UpstreamState) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from upstream")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
            }
        )

    async def upload(request: web.Request) -> web.Response:
        digest, size, chunks = hashlib.sha256(), 0, 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
            chunks += 1
        state.uploads.append(size)
        return web.json_response(
            {
                "size": size,
                "sha256": digest.hexdigest(),
                "chunked": request.headers.get("Transfer-Encoding", ""),
            }
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        count, size = int(request.query.get("n", "10")), int(request.query.get("size", "1000"))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        for i in range(count):
            await resp.write(bytes([i % 256]) * size)
        await resp.write_eof()
        return resp

    async def sse(request: web.Request) -> web.StreamResponse:
        count = int(request.query.get("n", "100"))
        forever = "forever" in request.query
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        state.open_streams += 1
        try:
            i = 0
            while forever or i < count:
                await resp.write(f'id: {i}\ndata: {{"n": {i}}}\n\n'.encode())
                i += 1
                if forever:
                    await asyncio.sleep(0.02)
            await resp.write_eof()
        finally:
            state.open_streams -= 1
            state.closed_streams += 1
        return resp

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/hello")

    async def hostile_headers(request: web.Request) -> web.Response:
        """What a hostile app answers: the platform's cookies in every disguise, plus headers that would
        take over (service worker scope) or wipe (Clear-Site-Data) the origin it is served on."""
        resp = web.Response(text="<h1>hostile</h1>", content_type="text/html")
        for cookie in HOSTILE_SET_COOKIES:
            resp.headers.add("Set-Cookie", cookie)
        resp.headers["Service-Worker-Allowed"] = "/"
        resp.headers["Clear-Site-Data"] = '"cookies"'
        return resp

    async def own_policies(request: web.Request) -> web.Response:
        """An app with its own opener policy (README custom headers replace it) and CSP (kept)."""
        return web.Response(text="<h1>policies</h1>", content_type="text/html", headers={
            "Cross-Origin-Opener-Policy": "unsafe-none", "Content-Security-Policy": "default-src * 'unsafe-inline'"})

    async def wsheaders(request: web.Request) -> web.WebSocketResponse:
        """Sends the handshake's request headers as its first message."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json([[k, v] for k, v in request.headers.items()])
        await ws.close()
        return ws

    async def wsecho(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat.v1",), max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data == "close-me":
                await ws.close(code=4001, message=b"bye")
            elif msg.type is WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        return ws

    app = web.Application(client_max_size=0)
    app.router.add_get("/hello", hello)
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_route("*", "/apps/{tail:.*}", echo)
    app.router.add_post("/upload", upload)
    app.router.add_get("/stream", stream)
    app.router.add_get("/sse", sse)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hostile-headers", hostile_headers)
    app.router.add_get("/own-policies", own_policies)
    app.router.add_get("/ws", wsecho)
    app.router.add_get("/wsheaders", wsheaders)
    return app


# ---- controller-side doubles of the lead's implementations -------------------------------------
PLATFORM_TOKEN = "sp_letmein-platform-token"


class HeaderAccess:
    """Private spaces are visible with `x-test-token: letmein` or the platform token as a Bearer."""

    async def may_view(self, route: Route, scope: Any) -> bool:
        headers = scope["headers"]
        return (b"x-test-token", b"letmein") in headers or (
            b"authorization", f"Bearer {PLATFORM_TOKEN}".encode()
        ) in headers


class TableActivator:
    """Wakes by flipping the route to ready in the table after `delay` (like the lead's activator will)."""

    def __init__(self, table: RouteTable, delay: float = 0.3) -> None:
        self.table, self.delay, self.calls = table, delay, 0
        self.fail: set[str] = set()

    async def wake(self, route: Route) -> Route:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if route.space_id in self.fail:
            raise RuntimeError("instance exited with code 1")
        ready = replace(route, state="ready", message="")
        self.table.set(ready)
        return ready


class RecordingHealth:
    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []

    def upstream_failed(self, route: Route, error: str) -> None:
        self.failures.append((route.space_id, error))


class RecordingActivity(ThrottledActivity):
    def __init__(self, interval: float) -> None:
        super().__init__(interval)
        self.calls = 0

    def record(self, space_id: str, now: float) -> None:
        self.calls += 1
        super().record(space_id, now)


async def inner_home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"controller:{request.url.path}")


@dataclass
class Stack:
    loop: LoopThread
    table: RouteTable
    activity: RecordingActivity
    activator: TableActivator
    health: RecordingHealth
    upstream: str
    upstream_state: UpstreamState
    proxy_port: int
    middleware: ProxyMiddleware
    counter: Iterator[int]
    plane: str = "python"  # or "haproxy": HAProxy in front, carrying ready public routes (host and path URLs)
    dataplane: DataPlane | None = None
    python: PythonCounter | None = None  # what reached the Python proxy's port
    python_port: int = 0  # the Python proxy's own port (behind HAProxy on the haproxy plane)

    def set_path_mode(self, mode: PathMode) -> None:
        """The site's SPACEPORT_PATH_APPS, for both planes (HAProxy carries path URLs only when trusted)."""
        self.middleware.path_mode = mode
        if self.dataplane is not None:
            self.dataplane.carry_paths(mode == "trusted")

    @contextlib.contextmanager
    def carried(self) -> Iterator[None]:
        """On the haproxy plane, fail unless HAProxy carried everything inside to the app (no request and no
        WebSocket reached the Python proxy); on the python plane, nothing to check."""
        before = self.python.count if self.python is not None else 0
        yield
        if self.plane == "haproxy" and self.python is not None:
            assert self.python.count == before, f"{self.python.count - before} went through Python: {self.python.last}"

    def poll(self) -> None:
        """HAProxy's activity reaches the recorder when the data plane reads its stats (every 2 s in serve)."""
        if self.dataplane is not None:
            self.dataplane.poll()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def host(self, slug: str) -> str:
        return f"{slug}.{APPS_DOMAIN}:{self.proxy_port}"

    def add(self, target: str | None = None, **kwargs: Any) -> Route:
        """A fresh route (unique space) to the test upstream."""
        n = next(self.counter)
        route = Route(
            space_id=f"alice/app{n}", slug=f"alice-app{n}", target=target or self.upstream, **kwargs
        )
        self.table.set(route)
        return route


class PythonCounter:
    """ASGI wrapper that counts the requests and WebSockets reaching the Python proxy."""

    def __init__(self, app: Any) -> None:
        self.app, self.count, self.last = app, 0, ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            self.count += 1
            self.last = f"{scope['type']} {scope['path']}"
        await self.app(scope, receive, send)


async def _start_upstream(state: UpstreamState) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_upstream(state), access_log=None)
    await runner.setup()
    sock = bind_socket()
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def data_plane(plane: str, table: RouteTable, activity: ThrottledActivity, python_port: int,
               run_dir: Path) -> Iterator[tuple[int, DataPlane | None]]:
    """The port visitors use: uvicorn's own ("python"), or HAProxy's in front of it, fed by the table."""
    if plane == "python":
        yield python_port, None
        return
    layout = Layout("127.0.0.1", free_port(), python_port, run_dir, APPS_DOMAIN,
                    ("spaceport_session", "spaceport_csrf", "spaceport_app_session"), "sp_",
                    app_cookie_secret=app_cookie_secret(TEST_KEY), slots=64)  # private spaces too
    haproxy = HAProxyProcess(layout)
    haproxy.start()
    dp = DataPlane(haproxy, APPS_DOMAIN, activity.record, paths=True)  # the harness's path mode is trusted
    table.listen(lambda space_id: dp.apply(space_id, table.get(space_id)))
    dp.sync(table.all())
    try:
        yield layout.bind_port, dp
    finally:
        haproxy.stop()


PLANES = ["python", pytest.param("haproxy", marks=pytest.mark.skipif(shutil.which("haproxy") is None,
                                                                     reason="haproxy is not installed"))]


@pytest.fixture(scope="module", params=PLANES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _stack(request.param, tmp_path_factory.mktemp("hap")) as made:
        yield made


@contextlib.contextmanager
def _stack(plane: str, run_dir: Path) -> Iterator[Stack]:
    loop = LoopThread()
    state = UpstreamState()
    runner, upstream = loop.call(_start_upstream(state))
    table = RouteTable()
    activity = RecordingActivity(interval=60.0)
    activator = TableActivator(table)
    health = RecordingHealth()
    inner = Starlette(routes=[StarletteRoute("/{path:path}", inner_home)])
    middleware = ProxyMiddleware(
        inner,
        apps_domain=APPS_DOMAIN,
        routes=table,
        activity=activity,
        access=HeaderAccess(),
        activator=activator,
        health=health,
        # no connect_timeout: the production 10 s. 50 connects at once on a loaded 2-core CI worker, served by
        # this same event loop, overran 2 s (one 502 in the 50-callers wake test)
        wake_timeout=10.0,
        path_mode="trusted",  # most tests prove forwarding through both URL styles; isolation flips it
        app_auth=AppAuth(TEST_KEY),
    )
    sock = bind_socket()
    counter_app = PythonCounter(middleware)
    config = uvicorn.Config(counter_app, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    serving = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), loop.loop)
    loop.call(_wait_started(server))
    counter = iter(range(1, 10**9))
    try:
        with data_plane(plane, table, activity, sock.getsockname()[1], run_dir) as (port, dp):
            yield Stack(loop, table, activity, activator, health, upstream, state, port, middleware, counter,
                        plane, dp, counter_app, sock.getsockname()[1])
    finally:
        server.should_exit = True
        serving.result(15)
        loop.call(runner.cleanup())
        loop.stop()


async def _wait_started(server: uvicorn.Server) -> None:
    while not server.started:
        await asyncio.sleep(0.01)


def run_sync(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn())  # type: ignore[arg-type]


async def aiter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()


# ---- real Gradio / Streamlit apps in their own uv venv -----------------------------------------
APP_VENV = Path(os.environ.get("SPACEPORT_TEST_CACHE", "/var/tmp/spaceport-test")) / "proxy-appvenv"

GRADIO_APP = """
import gradio as gr

def greet(name: str) -> str:
    return "Hello " + name + "!"

gr.Interface(fn=greet, inputs="text", outputs="text").launch(server_name="127.0.0.1", server_port={port})
"""

STREAMLIT_APP = """
import streamlit as st

st.title("Hello from Streamlit")
st.write("proxied")
"""


def app_python() -> Path:
    """Python of a cached venv with gradio and streamlit (built once, under a file lock)."""
    APP_VENV.parent.mkdir(parents=True, exist_ok=True)
    python = APP_VENV / "bin" / "python"
    marker = APP_VENV / ".complete"
    with open(APP_VENV.parent / "proxy-appvenv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            uv = uv_bin.find_uv_bin()
            subprocess.run([uv, "venv", "--clear", "--python", sys.executable, str(APP_VENV)], check=True)
            subprocess.run([uv, "pip", "install", "--python", str(python), "gradio", "streamlit"], check=True)
            marker.touch()
    return python


@contextlib.contextmanager
def app_process(
    argv: list[str], env: dict[str, str], health_url: str, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start an app, wait until `health_url` answers 200 (or the process dies), stop it afterwards."""
    log = open(cwd / "app.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proc, health_url, cwd / "app.log")
        yield proc
    finally:
        stop_process(proc)
        log.close()


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 240  # a bound for a loaded 2-core machine, not a timing assertion
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"app did not become healthy at {url}:\n{log.read_text()[-3000:]}")
