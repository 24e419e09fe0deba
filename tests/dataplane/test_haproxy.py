"""The HAProxy data plane against a real haproxy process and real aiohttp upstreams on loopback.

Upstreams echo what they received (path, headers) and serve SSE and WebSocket; the default backend is
an upstream tagged "python" standing for Spaceport's own app (the activator)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from controller.dataplane.haproxy import DataPlaneError, HAProxyProcess, Layout, RuntimeAPI, render_config
from controller.dataplane.plane import DataPlane, mapping_of
from controller.domain import appheaders, hs256
from controller.proxy.appauth import APP_COOKIE, AppAuth, app_cookie_secret
from controller.proxy.isolation import cookie_names, frame_ancestors, response_filter, route_headers
from controller.proxy.routes import RouteTable
from controller.proxy.types import Route

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
DOMAIN = "apps.localhost"
COOKIES = ("spaceport_session", "spaceport_csrf", "spaceport_app_session")
KEY = "the-site-key"
PLATFORM = "http://localhost:8000"  # the site's origin: what a non-embeddable app may be framed by


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Upstream:
    """An aiohttp app on its own loop thread: /sse streams until released, /ws echoes, the rest echoes."""

    def __init__(self, tag: str) -> None:
        self.tag, self.port = tag, free_port()
        self.release = threading.Event()
        self.closed = False
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/sse", self._sse)
        app.router.add_get("/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _echo(self, request: web.Request) -> web.Response:
        headers = [("Set-Cookie", c) for c in ("spaceport_session=forged; Domain=localhost", " Spaceport_Csrf =x",
                                                "__Host-spaceport_app_session=x; Secure", "theme=dark")]
        if request.path == "/redirect":
            headers.append(("Location", f"{self.target}/next?x=1"))
        if request.path == "/own-policies":  # an app that sets isolation headers and a CSP of its own
            headers += [("Cross-Origin-Opener-Policy", "unsafe-none"), ("Cross-Origin-Embedder-Policy", "unsafe-none"),
                        ("Content-Security-Policy", "default-src 'self'")]
        body = {"tag": self.tag, "path": request.raw_path, "headers": [list(h) for h in request.headers.items()]}
        return web.json_response(body, status=302 if request.path == "/redirect" else 200, headers=headers)

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: first from {self.tag}\n\n".encode())
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        await resp.write(b"data: last\n\n")
        return resp

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(f"{self.tag}:{msg.data}")
        return ws

    def close(self) -> None:
        if self.closed:
            return  # a test killed it already
        self.closed = True
        self.release.set()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Stack:
    haproxy: HAProxyProcess
    plane: DataPlane
    python: Upstream
    seen: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.haproxy.layout.bind_port}"


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    made = {tag: Upstream(tag) for tag in ("python", "a1", "a2", "b1")}
    yield made
    for upstream in made.values():
        upstream.close()


@pytest.fixture
def stack(tmp_path: Path, upstreams: dict[str, Upstream]) -> Iterator[Stack]:
    layout = Layout("127.0.0.1", free_port(), upstreams["python"].port, tmp_path / "hap", DOMAIN, COOKIES, "sp_",
                    app_cookie_secret=app_cookie_secret(KEY), slots=4, frame_ancestors=frame_ancestors(PLATFORM))
    haproxy = HAProxyProcess(layout)
    haproxy.start()
    seen: list[str] = []
    plane = DataPlane(haproxy, DOMAIN, lambda space, _now: seen.append(space), clock=lambda: 1000.0)
    try:
        yield Stack(haproxy, plane, upstreams["python"], seen)
    finally:
        haproxy.stop()


def route(space: str, target: str, **kw: Any) -> Route:
    return Route(space_id=space, slug=space.replace("/", "-"), target=target, **kw)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def get(client: aiohttp.ClientSession, stack: Stack, host: str, path: str = "/",
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with client.get(f"{stack.url}{path}", headers={"Host": host, **(headers or {})},
                          allow_redirects=False) as resp:
        body = await resp.json(content_type=None) if resp.status < 400 else {}
        return resp.status, body, resp


async def get_fresh(stack: Stack, host: str, path: str = "/", headers: dict[str, str] | None = None
                    ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    """`get` on a connection of its own, as a browser has one per host: a connection that already visited
    another space through HAProxy is served by Python for any other (_one_space_per_connection)."""
    async with aiohttp.ClientSession() as fresh:
        return await get(fresh, stack, host, path, headers)


async def raw(stack: Stack, request: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.haproxy.layout.bind_port)
    writer.write(request.encode())
    answer = (await asyncio.wait_for(reader.read(65536), 10)).decode("latin-1")
    writer.close()
    return answer


# ---- config and runtime API ---------------------------------------------------------------------
@pytest.mark.parametrize("secret", ["", app_cookie_secret(KEY)])
def test_rendered_config_is_valid_for_haproxy(tmp_path: Path, secret: str) -> None:
    layout = Layout("127.0.0.1", 8000, 8001, tmp_path, DOMAIN, COOKIES, "sp_", app_cookie_secret=secret, slots=3)
    HAProxyProcess(layout).write_files()
    checked = __import__("subprocess").run(["haproxy", "-c", "-f", str(layout.config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    text = render_config(layout)
    assert "http-server-close" not in text and "timeout tunnel 24h" in text
    assert [line for line in text.splitlines() if line.startswith("backend ")] == [
        "backend spaceport", "backend s1", "backend s2", "backend s3"]


@pytest.mark.parametrize("extra", [0, 1, 3, 60])
def test_a_long_data_dir_still_gets_a_socket_haproxy_accepts(tmp_path: Path, extra: int) -> None:
    """HAProxy refuses a stats socket path over 97 characters (CI's pytest dirs made 98-100): serve moves
    its run dir to a short temporary one rather than failing to start."""
    from controller.config import Settings
    from controller.dataplane import _layout
    pad = 97 - len(str(tmp_path / "d" / "haproxy-8000" / "admin.sock")) + extra
    data_dir = tmp_path / ("d" + "x" * pad)
    layout = _layout(Settings(data_dir=data_dir), "127.0.0.1", 8000)
    assert layout.socket_fits and (layout.run_dir.parent == data_dir) == (extra == 0)
    HAProxyProcess(layout).write_files()
    checked = __import__("subprocess").run(["haproxy", "-c", "-f", str(layout.config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("bad", [
    {"apps_domain": "apps.localhost\n    bind :1"}, {"apps_domain": "a b"}, {"platform_cookies": ("x;y",)},
    {"token_prefix": "sp_' }"}, {"bind_host": "127.0.0.1:1\nbind"}, {"run_dir": Path("/tmp/has space")},
    {"app_cookie_secret": 'x") -m int 1 }\n    bind :1'}, {"app_cookie": "a b"},
    {"frame_ancestors": "frame-ancestors 'none'\"\n    bind :1"}, {"frame_ancestors": "frame-ancestors http://a%[src]"},
    {"frame_ancestors": "frame-ancestors http://a b"}, {"frame_ancestors": "frame-ancestors *"},
    {"frame_ancestors": "frame-ancestors 'none'; script-src *"},
])
def test_config_refuses_values_that_could_inject_directives(tmp_path: Path, bad: dict[str, Any]) -> None:
    values: dict[str, Any] = {"bind_host": "127.0.0.1", "bind_port": 8000, "python_port": 8001, "run_dir": tmp_path,
                              "apps_domain": DOMAIN, "platform_cookies": COOKIES, "token_prefix": "sp_", **bad}
    with pytest.raises(DataPlaneError):
        render_config(Layout(**values))


def test_runtime_api_refuses_command_separators(stack: Stack) -> None:
    api = RuntimeAPI(stack.haproxy.layout.socket)
    for line in ("show info; shutdown frontend site", "show info\nshutdown frontend site", "x\r\ny"):
        with pytest.raises(DataPlaneError):
            api.command(line)
    assert "Name: HAProxy" in api.command("show info")


@pytest.mark.parametrize("space, slug", [
    ("alice/demo;del map #0 x", "alice-demo"), ("alice/demo", "alice-demo\nset map"), ("alice/de mo", "alice-de"),
    ("alice/demo|s9", "alice-demo"), ("alice/demo", "alice-demo.other"), ("alice/demo", "a b"),
])
def test_names_that_could_inject_into_the_map_are_never_mapped(space: str, slug: str) -> None:
    assert mapping_of(Route(space_id=space, slug=slug, target="http://127.0.0.1:1"), DOMAIN) is None


@pytest.mark.parametrize("target", ["http://localhost:80", "https://127.0.0.1:1", "http://127.0.0.1",
                                    "http://127.0.0.1:1/x", "http://u@127.0.0.1:1", "http://127.0.0.1:1 2"])
def test_only_plain_ip_targets_are_mapped(target: str) -> None:
    assert mapping_of(Route(space_id="a/b", slug="a-b", target=target), DOMAIN) is None


def test_private_and_not_ready_routes_stay_on_python() -> None:
    target = "http://127.0.0.1:1"
    assert mapping_of(Route(space_id="a/b", slug="a-b", target=target), DOMAIN) is not None
    for state in ("asleep", "paused", "unavailable"):
        assert mapping_of(Route(space_id="a/b", slug="a-b", target=target, state=state), DOMAIN) is None  # type: ignore[arg-type]
    private = mapping_of(Route(space_id="A/b", slug="a-b", target=target, private=True), DOMAIN)
    assert private is not None and private.value.split("|")[3] == "a/b"  # HAProxy checks the app cookie for a/b
    assert mapping_of(Route(space_id="a/b", slug="a-b", target=target, visitor_token=True), DOMAIN) is None


# ---- traffic ----------------------------------------------------------------------------------
async def test_public_route_headers_paths_and_responses(stack: Stack, upstreams: dict[str, Upstream],
                                                        client: aiohttp.ClientSession) -> None:
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
    host = f"alice-demo.{DOMAIN}:8000"
    basic = base64.b64encode(b"alice:sp_secret").decode()
    status, body, resp = await get(client, stack, host, "/apps/alice/demo/x?q=1", {
        "Cookie": "spaceport_session=S; theme=dark; spaceport_csrf=C; other=1; spaceport_app_session=A",
        "Authorization": "Bearer sp_secret", "X-HF-Authorization": f"Basic {basic}", "X-Forwarded-For": "10.0.0.1"})
    assert status == 200 and body["tag"] == "a1"
    assert body["path"] == "/x?q=1"  # under the base path on the host URL: stripped (Gradio)
    got = {k.lower(): v for k, v in body["headers"]}
    assert got["cookie"] == "theme=dark; other=1"
    assert "authorization" not in got and "x-hf-authorization" not in got
    assert got["x-forwarded-for"] == "10.0.0.1, 127.0.0.1" and got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == host and got["host"] == host
    assert resp.headers.getall("Set-Cookie")[-1] == "theme=dark"
    assert not [c for c in resp.headers.getall("Set-Cookie") if "forged" in c or "=x" in c]
    _status, body, _ = await get(client, stack, host, "/", {"Authorization": "Bearer app-key", "Cookie": "spaceport_session=S"})
    got = {k.lower(): v for k, v in body["headers"]}
    assert got["authorization"] == "Bearer app-key" and "cookie" not in got
    status, _, resp = await get(client, stack, host, "/redirect")
    assert status == 302 and resp.headers["Location"] == "/next?x=1"  # the internal origin never leaks


async def test_streamlit_routes_get_the_base_path_prepended(stack: Stack, upstreams: dict[str, Upstream],
                                                            client: aiohttp.ClientSession) -> None:
    stack.plane.apply("bob/st", route("bob/st", upstreams["b1"].target, strip_base_path=False))
    _, body, _ = await get(client, stack, f"bob-st.{DOMAIN}", "/_stcore/health")
    assert body["path"] == "/apps/bob/st/_stcore/health"
    _, body, _ = await get(client, stack, f"bob-st.{DOMAIN}", "/apps/bob/st/x")
    assert body["path"] == "/apps/bob/st/x"


async def test_everything_unmapped_goes_to_python(stack: Stack, upstreams: dict[str, Upstream],
                                                  client: aiohttp.ClientSession) -> None:
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
    stack.plane.apply("alice/secret", route("alice/secret", upstreams["a2"].target, private=True))
    stack.plane.apply("alice/sleepy", route("alice/sleepy", upstreams["a2"].target, state="asleep"))
    for host, path in [(DOMAIN, "/"), (f"alice-secret.{DOMAIN}", "/"), (f"alice-sleepy.{DOMAIN}", "/"),
                       (f"nobody-here.{DOMAIN}", "/"), (f"alice-demo.{DOMAIN}", "/__spaceport__/status"),
                       (f"alice-demo.{DOMAIN}", "/__spaceport__/auth"), ("localhost", "/apps/alice/demo/")]:
        status, body, _ = await get(client, stack, host, path, {"Cookie": "spaceport_session=S"})
        assert (status, body["tag"]) == (200, "python"), (host, path)
        assert {k.lower(): v for k, v in body["headers"]}["cookie"] == "spaceport_session=S"  # the platform's own


async def test_crafted_hosts_never_reach_another_spaces_backend(stack: Stack, upstreams: dict[str, Upstream],
                                                               client: aiohttp.ClientSession) -> None:
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
    stack.plane.apply("alice/secret", route("alice/secret", upstreams["a2"].target, private=True))
    for host in (f"x.alice-demo.{DOMAIN}", f"alice-demo.{DOMAIN}.evil", f"alice-demo.{DOMAIN}.", "alice-demo",
                 f"alice-secret.{DOMAIN}", f"ALICE-SECRET.{DOMAIN}:1"):
        _status, body, _ = await get(client, stack, host)
        assert body.get("tag") == "python", host
    two_hosts = f"GET / HTTP/1.1\r\nHost: alice-demo.{DOMAIN}\r\nHost: alice-secret.{DOMAIN}\r\n\r\n"
    assert (await raw(stack, two_hosts)).startswith("HTTP/1.1 400")
    head = await raw(stack, f"GET http://alice-demo.{DOMAIN}/ HTTP/1.1\r\nHost: alice-secret.{DOMAIN}\r\n\r\n")
    assert '"tag": "a2"' not in head  # never the private space's backend, whatever the authority says


async def test_websocket_and_sse_pass_unbuffered(stack: Stack, upstreams: dict[str, Upstream],
                                                 client: aiohttp.ClientSession) -> None:
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
    host = f"alice-demo.{DOMAIN}"
    async with client.ws_connect(f"{stack.url}/ws", headers={"Host": host}) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str() == "a1:hi"
    async with client.get(f"{stack.url}/sse", headers={"Host": host}) as resp:
        first = await asyncio.wait_for(resp.content.readline(), 10)  # while the upstream holds the stream open
        assert first == b"data: first from a1\n"
        upstreams["a1"].release.set()
        assert b"data: last" in await resp.content.read()


async def test_swap_keeps_open_websockets_of_both_spaces(stack: Stack, upstreams: dict[str, Upstream],
                                                         client: aiohttp.ClientSession) -> None:
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
    stack.plane.apply("bob/other", route("bob/other", upstreams["b1"].target))
    async with (client.ws_connect(f"{stack.url}/ws", headers={"Host": f"bob-other.{DOMAIN}"}) as other,
                client.ws_connect(f"{stack.url}/ws", headers={"Host": f"alice-demo.{DOMAIN}"}) as old):
        stack.plane.apply("alice/demo", route("alice/demo", upstreams["a2"].target))  # redeploy
        _, body, _ = await get(client, stack, f"alice-demo.{DOMAIN}")
        assert body["tag"] == "a2"
        for ws, expect in ((other, "b1:still"), (old, "a1:still")):
            await ws.send_str("still")
            assert await ws.receive_str() == expect
        stack.plane.poll()
        assert len(stack.plane._slots["alice/demo"].draining) == 1  # the old server waits for its socket
    for _ in range(50):  # its connection is gone once the client closed it: the next polls delete it
        stack.plane.poll()
        if not stack.plane._slots["alice/demo"].draining:
            break
        await asyncio.sleep(0.1)
    assert not stack.plane._slots["alice/demo"].draining


async def test_removed_route_goes_to_python_at_once_and_frees_its_slot(stack: Stack, upstreams: dict[str, Upstream],
                                                                       client: aiohttp.ClientSession) -> None:
    table = RouteTable()
    table.listen(lambda space: stack.plane.apply(space, table.get(space)))
    table.set(route("alice/demo", upstreams["a1"].target))
    assert (await get(client, stack, f"alice-demo.{DOMAIN}"))[1]["tag"] == "a1"
    table.set(route("alice/demo", upstreams["a1"].target, state="asleep"))  # sleep
    assert (await get(client, stack, f"alice-demo.{DOMAIN}"))[1]["tag"] == "python"
    table.replace_all([route("bob/other", upstreams["b1"].target)])  # a follower's full reload
    async with aiohttp.ClientSession() as fresh:  # `client`'s connection is alice's (see the test below)
        assert (await get(fresh, stack, f"bob-other.{DOMAIN}"))[1]["tag"] == "b1"
        table.remove("bob/other")
        assert (await get(fresh, stack, f"bob-other.{DOMAIN}"))[1]["tag"] == "python"
    for _ in range(50):
        stack.plane.poll()
        if not stack.plane._slots:
            break
        await asyncio.sleep(0.1)
    assert not stack.plane._slots and len(stack.plane._free) == 4


async def test_a_connection_never_reaches_a_deleted_servers_app_for_another_space(
        stack: Stack, upstreams: dict[str, Upstream]) -> None:
    """HAProxy 2.6 keeps a visitor's upstream connection with its session and finds it again by the
    server's address in memory, which the next added server may take once the first is deleted: without
    the one-space-per-connection rule, bob's request on a connection that visited alice reached alice's
    app in 186 of 200 tries. With it, the other space's request goes to Python; a new connection is
    carried to bob's app."""
    for n in range(30):
        async with aiohttp.ClientSession() as visitor, aiohttp.ClientSession() as fresh:
            stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
            assert (await get(visitor, stack, f"alice-demo.{DOMAIN}"))[1]["tag"] == "a1"
            stack.plane.apply("alice/demo", None)  # sleeps: its server is deleted
            assert not stack.plane._slots, "the slot was not freed: the server was not deleted"
            stack.plane.apply("bob/other", route("bob/other", upstreams["b1"].target))
            served_by = (await get(visitor, stack, f"bob-other.{DOMAIN}"))[1]["tag"]
            assert served_by != "a1", f"try {n}: bob's request reached alice's app"
            assert served_by == "python", n
            assert (await get(fresh, stack, f"bob-other.{DOMAIN}"))[1]["tag"] == "b1", n
            stack.plane.apply("bob/other", None)


async def test_a_private_space_is_served_by_haproxy_only_with_its_own_valid_app_cookie(
        stack: Stack, upstreams: dict[str, Upstream], client: aiohttp.ClientSession) -> None:
    """As an attacker: no cookie, another space's, an expired one, another site's, `alg: none`, a payload
    changed under a valid signature: all go to Python (which signs visitors in or refuses them)."""
    stack.plane.apply("alice/secret", route("alice/secret", upstreams["a1"].target, private=True))
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a2"].target, private=True))
    auth, host = AppAuth(KEY), f"alice-secret.{DOMAIN}"
    valid = auth.cookie("alice/secret", 7)

    async def served_by(cookie: str | None) -> str:
        _, body, _ = await get(client, stack, host, "/", {"Cookie": f"theme=dark; {APP_COOKIE}={cookie}"} if cookie else {})
        return str(body.get("tag"))

    status, body, _ = await get(client, stack, host, "/", {"Cookie": f"theme=dark; {APP_COOKIE}={valid}"})
    assert (status, body["tag"]) == (200, "a1")
    assert {k.lower(): v for k, v in body["headers"]}["cookie"] == "theme=dark"  # the app never sees it
    head, payload, signature = valid.split(".")
    claims = {"s": "alice/secret", "u": 7, "exp": 4102444800}
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    other = base64.urlsafe_b64encode(b'{"exp":4102444800,"s":"alice/secret","u":1}').rstrip(b"=").decode()
    for cookie in (None, "garbage", auth.cookie("alice/demo", 7), AppAuth(KEY, clock=lambda: 0).cookie("alice/secret", 7),
                   AppAuth("another-site").cookie("alice/secret", 7), f"{unsigned}.{payload}.",
                   f"{head}.{other}.{signature}", hs256.sign(hs256.derive_secret(KEY, "other-purpose"), claims)):
        assert await served_by(cookie) == "python", cookie
    assert await served_by(auth.cookie("alice/demo", 7)) == "python"  # its own space's cookie only...
    status, body, _ = await get_fresh(stack, f"alice-demo.{DOMAIN}", "/",
                                      {"Cookie": f"{APP_COOKIE}={auth.cookie('alice/demo', 7)}"})
    assert body["tag"] == "a2"  # ...where it works


async def test_an_instance_that_refuses_connections_falls_back_to_python(
        stack: Stack, upstreams: dict[str, Upstream], client: aiohttp.ClientSession) -> None:
    """The moment between an app's death and the route's news (a follower's notice): not HAProxy's bare 503,
    Spaceport's own answer (the activator, the paused or error page), for this request and the next ones."""
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    stack.plane.apply("alice/dead", route("alice/dead", gone))
    for _ in range(3):
        status, body, _ = await get(client, stack, f"alice-dead.{DOMAIN}", "/x")
        assert (status, body.get("tag")) == (200, "python")
    doomed = upstreams["a2"]
    stack.plane.apply("alice/demo", route("alice/demo", doomed.target))
    async with aiohttp.ClientSession() as visitor:  # `client` visited alice/dead
        assert (await get(visitor, stack, f"alice-demo.{DOMAIN}"))[1]["tag"] == "a2"
        await asyncio.get_running_loop().run_in_executor(None, doomed.close)  # the app dies while routed
        status, body, _ = await get(visitor, stack, f"alice-demo.{DOMAIN}", "/after")
    assert (status, body.get("tag")) == (200, "python")


async def test_activity_comes_from_haproxy_stats(stack: Stack, upstreams: dict[str, Upstream],
                                                 client: aiohttp.ClientSession) -> None:
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
    stack.plane.apply("bob/idle", route("bob/idle", upstreams["b1"].target))
    stack.plane.poll()
    assert stack.seen == []
    await get(client, stack, f"alice-demo.{DOMAIN}")
    stack.plane.poll()
    assert stack.seen == ["alice/demo"]
    stack.plane.poll()  # nothing moved since
    assert stack.seen == ["alice/demo"]
    async with client.ws_connect(f"{stack.url}/ws", headers={"Host": f"alice-demo.{DOMAIN}"}) as ws:
        stack.plane.poll()
        await ws.send_str("x")
        await ws.receive_str()
        stack.plane.poll()  # frames on an open WebSocket count, as in the Python proxy
    assert stack.seen.count("alice/demo") >= 2 and "bob/idle" not in stack.seen


def test_exhausted_slots_leave_the_space_on_python(stack: Stack, upstreams: dict[str, Upstream]) -> None:
    for n in range(5):
        stack.plane.apply(f"o/s{n}", route(f"o/s{n}", upstreams["a1"].target))
    assert len(stack.plane.mapped()) == 4 and "o/s4" not in stack.plane.mapped()


async def test_a_failed_update_leaves_no_server_behind_for_the_next_space(stack: Stack, upstreams: dict[str, Upstream],
                                                                           client: aiohttp.ClientSession) -> None:
    api = stack.haproxy.api
    api.expect(f"add server s1/i{stack.plane._serial + 1} {upstreams['a2'].target[7:]}", ("New server registered",))
    api.expect(f"enable server s1/i{stack.plane._serial + 1}")  # stands in for whatever went wrong half way
    stack.plane.apply("alice/demo", route("alice/demo", upstreams["a1"].target))
    assert "alice/demo" not in stack.plane.mapped()  # refused: the space stays on the Python proxy
    assert (await get(client, stack, f"alice-demo.{DOMAIN}"))[1]["tag"] == "python"
    stack.plane.poll()
    assert "s1/" not in api.command("show servers state s1").split("\n", 2)[-1]  # the server is gone
    stack.plane.apply("bob/next", route("bob/next", upstreams["b1"].target))
    assert (await get(client, stack, f"bob-next.{DOMAIN}"))[1]["tag"] == "b1"


# ---- README headers: custom_headers and disable_embedding -----------------------------------------
ISOLATED = (("cross-origin-embedder-policy", "require-corp"), ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "cross-origin"))
WATCHED = ("cross-origin-embedder-policy", "cross-origin-opener-policy", "cross-origin-resource-policy",
           "content-security-policy")
APP_OWN = [("cross-origin-opener-policy", "unsafe-none"), ("cross-origin-embedder-policy", "unsafe-none"),
           ("content-security-policy", "default-src 'self'")]  # what /own-policies sets itself


def watched(resp: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    """The README-header-related lines of a response, in order (several CSP lines stay several)."""
    lines = [(k.decode().lower(), v.decode()) for k, v in resp.raw_headers]
    return [(k, v) for k, v in lines if k in WATCHED]


async def python_answer(client: aiohttp.ClientSession, upstream: Upstream, path: str, r: Route) -> list[tuple[str, str]]:
    """What the Python proxy sends for the same route and answer: its own filter over the app's raw headers."""
    async with client.get(f"{upstream.target}{path}") as resp:
        raw = [(k.lower(), v) for k, v in resp.raw_headers]
    fix = response_filter(cookie_names(COOKIES), on_platform_origin=False, sandboxed=False, rewrite_location=None,
                          added=route_headers(r.headers, r.embeddable, PLATFORM))
    return [(k.decode(), v.decode()) for k, v in fix(raw) if k.decode() in WATCHED]


def test_readme_headers_travel_in_the_map_value() -> None:
    target = "http://127.0.0.1:1"
    isolated = mapping_of(Route(space_id="a/b", slug="a-b", target=target, headers=ISOLATED[:2], embeddable=False),
                          DOMAIN)
    assert isolated is not None
    assert isolated.value == "strip|/apps/a/b|http://127.0.0.1:1|public|require-corp|same-origin|-|no"
    plain = mapping_of(Route(space_id="a/b", slug="a-b", target=target), DOMAIN)
    assert plain is not None and plain.value == "strip|/apps/a/b|http://127.0.0.1:1|public|-|-|-|yes"
    # a site whose origin HAProxy's config cannot hold: disable_embedding stays on Python, headers do not
    assert mapping_of(Route(space_id="a/b", slug="a-b", target=target, embeddable=False), DOMAIN,
                      frame_ancestors=False) is None
    assert mapping_of(Route(space_id="a/b", slug="a-b", target=target, headers=ISOLATED), DOMAIN,
                      frame_ancestors=False) is not None


@pytest.mark.parametrize("headers", [
    (("cross-origin-opener-policy", "same-origin\r\nset-cookie: spaceport_session=x"),),
    (("cross-origin-opener-policy", "same-origin|s1|keep"),),
    (("cross-origin-embedder-policy", "require-corp; del map #0 x"),),
    (("cross-origin-embedder-policy", "%[src]"),), (("cross-origin-embedder-policy", ""),),
    (("cross-origin-embedder-policy", "-"),), (("x-frame-options", "ALLOWALL"),),
    (("Cross-Origin-Opener-Policy", "same-origin"),),
    (("cross-origin-opener-policy", "same-origin"), ("cross-origin-opener-policy", "unsafe-none")),
])
def test_headers_that_are_not_spec_values_never_reach_the_map(headers: tuple[tuple[str, str], ...]) -> None:
    """A README's headers arrive filtered (appheaders); a Route holding anything else stays on Python
    (which adds what the route says) rather than put it in HAProxy's map."""
    assert mapping_of(Route(space_id="a/b", slug="a-b", target="http://127.0.0.1:1", headers=headers), DOMAIN) is None


def test_config_without_a_frame_ancestors_policy_adds_no_csp(tmp_path: Path) -> None:
    layout = Layout("127.0.0.1", 8000, 8001, tmp_path, DOMAIN, COOKIES, "sp_", slots=1, frame_ancestors="")
    HAProxyProcess(layout).write_files()
    checked = __import__("subprocess").run(["haproxy", "-c", "-f", str(layout.config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "content-security-policy" not in render_config(layout)


@pytest.mark.parametrize("public_url, policy", [
    ("", "frame-ancestors 'none'"), ("http://localhost:8000", "frame-ancestors http://localhost:8000"),
    ("https://Spaces.example.com/", "frame-ancestors https://Spaces.example.com"),
    ("http://[::1]:8000/site/", "frame-ancestors http://[::1]:8000"), ("http://user@host:1", ""),
])
def test_serve_gives_haproxy_the_python_proxys_frame_ancestors(tmp_path: Path, public_url: str, policy: str) -> None:
    from controller.config import Settings
    from controller.dataplane import _layout
    from controller.proxy.middleware import ProxyMiddleware

    layout = _layout(Settings(data_dir=tmp_path, public_url=public_url), "127.0.0.1", 8000)
    assert layout.frame_ancestors == policy
    python = ProxyMiddleware(web.Application(), apps_domain=DOMAIN, routes=RouteTable(), activity=RouteTable(),  # type: ignore[arg-type]
                             access=RouteTable(), activator=None, public_url=public_url)  # type: ignore[arg-type]
    if policy:  # the same CSP line the Python proxy adds (else such routes stay on it)
        assert route_headers((), False, python._public_origin) == [(b"content-security-policy", policy.encode())]


async def test_readme_headers_on_haproxy_are_exactly_the_python_proxys(stack: Stack, upstreams: dict[str, Upstream],
                                                                       client: aiohttp.ClientSession) -> None:
    """custom_headers replace the app's own, disable_embedding adds a CSP next to the app's; a route without
    them gets none of them; all carried by HAProxy (the app answers, not Python)."""
    isolated = route("alice/iso", upstreams["a1"].target, headers=ISOLATED, embeddable=False)
    framed = route("alice/framed", upstreams["a2"].target, embeddable=False)
    plain = route("bob/plain", upstreams["b1"].target)
    for r in (isolated, framed, plain):
        stack.plane.apply(r.space_id, r)
        assert r.space_id in stack.plane.mapped()
    frame = ("content-security-policy", "frame-ancestors http://localhost:8000")
    expected = {
        ("alice/iso", "/own-policies"): [APP_OWN[2], *ISOLATED, frame], ("alice/iso", "/"): [*ISOLATED, frame],
        ("alice/framed", "/own-policies"): [*APP_OWN, frame], ("alice/framed", "/"): [frame],
        ("bob/plain", "/own-policies"): APP_OWN, ("bob/plain", "/"): [],
    }
    for r, tag in ((isolated, "a1"), (framed, "a2"), (plain, "b1")):
        for path in ("/own-policies", "/"):
            status, body, resp = await get_fresh(stack, f"{r.slug}.{DOMAIN}", path)
            assert (status, body["tag"]) == (200, tag)
            assert watched(resp) == await python_answer(client, upstreams[tag], path, r), (r.space_id, path)
            assert watched(resp) == expected[(r.space_id, path)], (r.space_id, path)


async def test_an_owners_crafted_custom_headers_add_only_spec_values(stack: Stack, upstreams: dict[str, Upstream],
                                                                    client: aiohttp.ClientSession) -> None:
    """As an attacker (the README is the owner's): newlines, map separators, runtime API separators, log-format
    tags, other headers and values outside the spec reach neither the map nor a response; the one allowed
    value among them does."""
    card = {"custom_headers": {
        "Cross-Origin-Opener-Policy": "same-origin\r\nSet-Cookie: spaceport_session=forged",
        "Cross-Origin-Embedder-Policy": "require-corp|s1|keep|http://127.0.0.1:1|public",
        "cross-origin-resource-policy": "same-site; del map #0 x",
        "cross-origin-resource-policy ": " Same-Site ",
        "Cross-Origin-Embedder-Policy\n": "%[req.hdr(cookie)]",
        "X-Frame-Options": "ALLOWALL", "Set-Cookie": "spaceport_session=forged", "content-security-policy": "*",
    }, "disable_embedding": "true"}
    headers, embeddable = appheaders.custom_headers(card), appheaders.embeddable(card)
    assert (headers, embeddable) == ((("cross-origin-resource-policy", "same-site"),), False)
    r = route("mallory/app", upstreams["a1"].target, headers=headers, embeddable=embeddable)
    stack.plane.apply(r.space_id, r)
    assert stack.plane.mapped()["mallory/app"].value.endswith("|public|-|-|same-site|no")
    entries = stack.haproxy.api.command(f"show map {stack.plane._map}").strip().splitlines()
    assert len(entries) == 1 and entries[0].endswith(f"mallory-app.{DOMAIN} s1|strip|/apps/mallory/app|"
                                                     f"{upstreams['a1'].target}|public|-|-|same-site|no")
    status, body, resp = await get(client, stack, f"mallory-app.{DOMAIN}", "/own-policies", {"Cookie": "a=b"})
    assert (status, body["tag"]) == (200, "a1")
    assert watched(resp) == [*APP_OWN, ("cross-origin-resource-policy", "same-site"),
                             ("content-security-policy", "frame-ancestors http://localhost:8000")]
    assert watched(resp) == await python_answer(client, upstreams["a1"], "/own-policies", r)
    assert "X-Frame-Options" not in resp.headers and not [c for c in resp.headers.getall("Set-Cookie") if "forged" in c]


async def test_readme_headers_are_not_added_to_what_python_or_an_upgrade_answers(
        stack: Stack, upstreams: dict[str, Upstream], client: aiohttp.ClientSession) -> None:
    """The slot's Python backup (a dead instance) answers with Python's own headers: HAProxy adds none (no
    second CSP); a WebSocket's 101 gets none either, as from the Python proxy."""
    gone = f"http://127.0.0.1:{free_port()}"
    stack.plane.apply("alice/dead", route("alice/dead", gone, headers=ISOLATED, embeddable=False))
    status, body, resp = await get(client, stack, f"alice-dead.{DOMAIN}", "/own-policies")
    assert (status, body["tag"]) == (200, "python") and watched(resp) == APP_OWN
    stack.plane.apply("alice/iso", route("alice/iso", upstreams["a1"].target, headers=ISOLATED, embeddable=False))
    head = await raw(stack, f"GET /ws HTTP/1.1\r\nHost: alice-iso.{DOMAIN}\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n")
    assert head.startswith("HTTP/1.1 101"), head
    assert "cross-origin" not in head.lower() and "frame-ancestors" not in head.lower(), head


async def test_changing_a_routes_headers_takes_effect_without_reload(stack: Stack, upstreams: dict[str, Upstream],
                                                                     client: aiohttp.ClientSession) -> None:
    """A README change (a redeploy with new front matter, same instance) is one `set map`: the same HAProxy
    process and config, the same server, an open WebSocket of the space goes on."""
    table = RouteTable()
    table.listen(lambda space: stack.plane.apply(space, table.get(space)))
    target, host = upstreams["a1"].target, f"alice-demo.{DOMAIN}"
    assert stack.haproxy.proc is not None
    pid, config = stack.haproxy.proc.pid, stack.haproxy.layout.config.read_text()
    table.set(route("alice/demo", target))
    assert watched((await get(client, stack, host))[2]) == []
    server = stack.plane._slots["alice/demo"].server
    steps: list[tuple[Route, list[tuple[str, str]]]] = [
        (route("alice/demo", target, headers=(("cross-origin-opener-policy", "same-origin"),)),
         [("cross-origin-opener-policy", "same-origin")]),
        (route("alice/demo", target, headers=(("cross-origin-embedder-policy", "credentialless"),
                                              ("cross-origin-opener-policy", "same-origin-allow-popups")),
               embeddable=False),
         [("cross-origin-embedder-policy", "credentialless"), ("cross-origin-opener-policy", "same-origin-allow-popups"),
          ("content-security-policy", "frame-ancestors http://localhost:8000")]),
        (route("alice/demo", target), []),
    ]
    async with client.ws_connect(f"{stack.url}/ws", headers={"Host": host}) as ws:
        for changed, expect in steps:
            table.set(changed)
            status, body, resp = await get(client, stack, host)
            assert (status, body["tag"]) == (200, "a1")
            assert watched(resp) == expect == await python_answer(client, upstreams["a1"], "/", changed)
            await ws.send_str("still")
            assert await ws.receive_str() == "a1:still"
    assert stack.plane._slots["alice/demo"].server == server and not stack.plane._slots["alice/demo"].draining
    assert stack.haproxy.alive() and stack.haproxy.proc.pid == pid
    assert stack.haproxy.layout.config.read_text() == config
    assert f"Pid: {pid}" in stack.haproxy.api.command("show info")


async def test_haproxy_writes_only_spec_values_whatever_a_map_field_holds(
        stack: Stack, upstreams: dict[str, Upstream], client: aiohttp.ClientSession) -> None:
    """Defence in depth: even a map entry that bypassed mapping_of (hand-written here) makes HAProxy write
    a header only with a value its spec defines, and the CSP only as the site's fixed policy."""
    r = route("alice/demo", upstreams["a1"].target)
    stack.plane.apply(r.space_id, r)
    key, slot = f"alice-demo.{DOMAIN}", stack.plane._slots["alice/demo"].name
    base = f"{slot}|strip|/apps/alice/demo|{upstreams['a1'].target}|public"
    for fields in ("require-corp,x|same-origin,unsafe-none|%[src]|yes", "REQUIRE-CORP|same-origin_|cross-origin.|yess",
                   "require-corp-|-same-origin|same-sitee|no,frame-ancestors", "-|-|-|No"):
        stack.haproxy.api.expect(f"set map {stack.plane._map} {key} {base}|{fields}")
        assert stack.haproxy.api.command(f"show map {stack.plane._map}").strip().endswith(fields)
        status, body, resp = await get(client, stack, key, "/")
        assert (status, body["tag"]) == (200, "a1") and watched(resp) == [], fields
    stack.haproxy.api.expect(f"set map {stack.plane._map} {key} {base}|credentialless|-|same-site|no")
    assert watched((await get(client, stack, key, "/"))[2]) == [
        ("cross-origin-embedder-policy", "credentialless"), ("cross-origin-resource-policy", "same-site"),
        ("content-security-policy", "frame-ancestors http://localhost:8000")]
