"""Path URLs (/apps/OWNER/NAME/...) on the HAProxy data plane, as an attacker: whatever the request and
whatever the app answers, HAProxy routes and filters exactly as the Python proxy does.

One module-scoped stack (tests/proxy's harness: HAProxy in front of the real ProxyMiddleware, on a site
that trusts path URLs) and tagged upstreams, one per space. Every crafted request goes once through
HAProxy's port and once straight to the Python proxy's port; the answers must be the same. Requests that
HAProxy carried itself are proven so (the Python port never saw them), or the comparison would be
Python's against Python's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from controller.proxy import Route
from tests.proxy.proxy_harness import HOSTILE_SET_COOKIES, Stack, _stack, bind_socket

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
DOMAIN = "apps.localhost"


def tagged_app(tag: str) -> web.Application:
    """Echoes its tag, the path it got and its headers; `?location=V` answers 302 to V; /hostile sets the
    platform's cookies in every disguise and headers that would take over the origin it is served on."""

    async def echo(request: web.Request) -> web.Response:
        body = {"tag": tag, "path": request.raw_path, "headers": [[k, v] for k, v in request.headers.items()]}
        resp = web.json_response(body, status=302 if "location" in request.query else 200)
        if "location" in request.query:
            resp.headers["Location"] = request.query["location"].replace("ORIGIN", f"http://{request.host}")
        if request.path.endswith("/hostile"):
            for cookie in HOSTILE_SET_COOKIES:
                resp.headers.add("Set-Cookie", cookie)
            resp.headers["Service-Worker-Allowed"] = "/"
            resp.headers["Clear-Site-Data"] = '"cookies", "storage"'
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@dataclass
class Site:
    stack: Stack
    origins: dict[str, str]  # tag -> upstream origin

    def route(self, space: str, tag: str, **kw: Any) -> Route:
        made = Route(space_id=space, slug=space.replace("/", "-").lower(), target=self.origins[tag], **kw)
        self.stack.table.set(made)
        return made


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with _stack("haproxy", tmp_path_factory.mktemp("hap-paths")) as stack:
        runners, origins = [], {}
        for tag in ("a", "b", "vault", "st", "Up"):
            runner, origin = stack.loop.call(_start(tagged_app(tag)))
            runners.append(runner)
            origins[tag] = origin
        made = Site(stack, origins)
        made.route("alice/a", "a")
        made.route("bob/b", "b")
        made.route("bob/vault", "vault", private=True)
        made.route("carol/st", "st", strip_base_path=False)
        made.route("Dave/Up", "Up")  # an owner's name with capitals: the route's base keeps them
        made.route("erin/sleepy", "a", state="asleep")
        made.route("erin/sleepier", "b", state="asleep")
        try:
            yield made
        finally:
            for runner in runners:
                stack.loop.call(runner.cleanup())


def haproxy_paths(stack: Stack) -> list[str]:
    """The keys of HAProxy's paths.map, as HAProxy itself lists them."""
    plane = stack.dataplane
    assert plane is not None
    lines = plane.api.command(f"show map {plane._paths_map}").strip().splitlines()
    return sorted(line.split()[1] for line in lines if line.strip())


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bind_socket()
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def json(self) -> dict[str, Any]:
        with contextlib.suppress(ValueError):
            value = json.loads(self.body)
            if isinstance(value, dict):
                return value
        return {}

    def summary(self) -> tuple[Any, ...]:
        """What decides where a request went and what the visitor got (not dates, not X-Forwarded-For)."""
        body = self.json
        got = {k.lower(): v for k, v in body.get("headers", [])}
        return (self.status, body.get("tag"), body.get("path"), body.get("error"), got.get("cookie"),
                got.get("authorization"), self.header("location"), sorted(self.header("set-cookie")),
                self.header("service-worker-allowed"), self.header("clear-site-data"))


async def send(port: int, head: str) -> Answer:
    """One raw request (exactly these bytes: no client normalizes the target) on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode("latin-1"))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    if ("transfer-encoding", "chunked") in headers:
        body = _dechunk(body)
    return Answer(int(lines[0].split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, data = out + data[:n], data[n + 2 :]
    return out


async def both(site: Site, target: str, host: str | None, extra: str = "") -> tuple[Answer, Answer, bool]:
    """The answer through HAProxy, the Python proxy's own answer, and whether HAProxy carried it itself."""
    head = f"GET {target} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "") + extra
    head += "Connection: close\r\n\r\n"
    counter = site.stack.python
    assert counter is not None
    before = counter.count
    through = await send(site.stack.proxy_port, head)
    carried = counter.count == before
    direct = await send(site.stack.python_port, head)
    return through, direct, carried


PLATFORM = "localhost:8000"
REFUSED = "refused"  # HAProxy answers 400 itself where Python would take the request: stricter, never laxer
# (request target, Host, carried by HAProxy): where each one goes is Python's decision, HAProxy takes the
# same; it carries a request itself only where the Python proxy would proxy it to a running public app
CRAFTED: list[tuple[str, str, bool | str | None]] = [
    ("/apps/alice/a/x?q=1", PLATFORM, True),
    ("/apps/Alice/A/x", PLATFORM, True),  # RouteTable.by_space ignores case
    ("/apps/alice/a/../../apps/bob/b/x", PLATFORM, True),  # neither normalizes: alice's own app gets the dots
    ("/apps/alice/a/%2e%2e/%2e%2e/bob/b/x", PLATFORM, True),
    ("/apps/alice/a/x;/../../bob/b/", PLATFORM, True),
    ("/apps/alice/a/x?/apps/bob/b/", PLATFORM, True),
    ("/apps/alice/a//bob/b/x", PLATFORM, True),
    ("/apps/alice/a/x#/apps/bob/b/", PLATFORM, REFUSED),  # a fragment in a request: HAProxy is stricter
    ("/apps/alice%2Fa/x", PLATFORM, False),  # anything encoded in the prefix: Python decides
    ("/apps/alice/%61/x", PLATFORM, False),
    ("/%61pps/bob/b/x", PLATFORM, False),
    ("//apps/bob/b/x", PLATFORM, False),
    ("/apps//bob/b/x", PLATFORM, False),
    ("/apps/bob/b", PLATFORM, False),  # the bare prefix: Python's redirect to the slash
    ("/apps/bob/b/__spaceport__/status", PLATFORM, False),  # the waking page's status is Python's
    ("/apps/bob/b/__spaceport__/auth?token=x", PLATFORM, True),  # only a host URL's sign-in is Python's
    ("/apps/bob/vault/x", PLATFORM, False),  # private: the platform session decides, in Python
    ("/apps/erin/sleepy/x", "127.0.0.1:8000", False),  # asleep: the activator wakes it, then it answers
    ("/apps/carol/st/x?q=1", PLATFORM, True),  # keep: the route's own base
    ("/apps/CAROL/St/x", PLATFORM, True),
    ("/apps/dave/up/x", PLATFORM, True),
    ("/apps/nobody/here/x", PLATFORM, False),
    ("http://alice-a.apps.localhost/apps/bob/b/x", PLATFORM, REFUSED),  # an authority that is not the Host
    (f"http://{PLATFORM}/apps/bob/b/x", PLATFORM, True),  # absolute form, as a forward proxy sends it
    (f"http://alice-a.{DOMAIN}/x?q=1", f"alice-a.{DOMAIN}", True),
    # the Host decides first: an app host never takes a path route, whatever its path says
    ("/apps/bob/b/x", f"alice-a.{DOMAIN}", True),
    ("/apps/bob/b/x", f"alice-a.{DOMAIN}:8000", True),
    ("/apps/bob/b/x", f"ALICE-A.{DOMAIN.upper()}", True),
    ("/apps/bob/b/x", f"alice-a.{DOMAIN}:abc", False),  # Python drops whatever follows the last colon
    ("/apps/bob/b/x", f"alice-a.{DOMAIN}:", False),
    ("/apps/bob/b/x", f"x:y.{DOMAIN}:80", False),
    ("/apps/bob/b/x", f"x:y.{DOMAIN}", True),  # Python: host name "x", so a path URL
    ("/apps/bob/b/x", f"alice-a.{DOMAIN}.", True),
    ("/apps/bob/b/x", f"x.alice-a.{DOMAIN}", True),
    ("/apps/bob/b/x", f"nobody-here.{DOMAIN}", False),  # an app host without a route: 404, never bob's
    ("/apps/bob/b/x", f"erin-sleepier.{DOMAIN}", False),
    ("/apps/bob/b/x", "[::1]:8000", True),
    ("/apps/bob/b/x", "[::1]", True),
    ("/apps/bob/b/x", "127.0.0.1", True),
    ("/apps/bob/b/x", DOMAIN, True),
]


@pytest.mark.parametrize(("target", "host", "carried"), CRAFTED)
async def test_crafted_path_requests_go_where_python_sends_them(site: Site, target: str, host: str,
                                                                carried: bool | str | None) -> None:
    through, direct, by_haproxy = await both(site, target, host, "Cookie: theme=dark; spaceport_session=S\r\n"
                                             "Authorization: Bearer sp_platform-token\r\n")
    if carried == REFUSED:
        assert (through.status, through.json.get("tag"), by_haproxy) == (400, None, True)
        return
    assert through.summary() == direct.summary(), (through.summary(), direct.summary())
    if carried is not None:
        assert by_haproxy is carried
    if through.json.get("tag") is not None:  # an app answered: never with the platform's credentials
        assert "spaceport_session" not in str(through.json["headers"]) and "sp_platform" not in through.body.decode()


async def test_path_urls_of_running_public_spaces_are_carried_by_haproxy(site: Site) -> None:
    """The differential test above means something only if HAProxy, not Python, answered these."""
    for target, tag, path in (("/apps/alice/a/x?q=1", "a", "/x?q=1"), ("/apps/Alice/A/", "a", "/"),
                              ("/apps/carol/st/x", "st", "/apps/carol/st/x"),
                              ("/apps/CAROL/St/x", "st", "/apps/carol/st/x"), ("/apps/dave/up/y", "Up", "/y")):
        through, _direct, carried = await both(site, target, PLATFORM)
        assert (through.status, through.json.get("tag"), through.json.get("path"), carried) == (200, tag, path, True)


@pytest.mark.parametrize("location", [
    "/next", "/", "/apps/bob/b/", "/apps/alice/a", "/apps/alice/a/ok", "/apps/Alice/A/x", "//evil.example/x",
    "ORIGIN", "ORIGIN/", "ORIGIN?x=1", "ORIGIN/next?x=1", "ORIGIN#frag", "ORIGINX/y", "ORIGIN/a,b", "/a,b",
    "http://127.0.0.1:1/x", "https://evil.example/apps/bob/b/", "next", "?x=1",
])
@pytest.mark.parametrize("prefix", ["/apps/alice/a", "/apps/ALICE/a", "/apps/carol/st"])
async def test_an_apps_location_never_points_into_another_space(site: Site, location: str, prefix: str) -> None:
    """The app answers a redirect of its choosing: the visitor gets exactly the Python proxy's rewrite (the
    internal origin dropped, a path under the prefix as requested), on HAProxy."""
    through, direct, carried = await both(site, f"{prefix}/go?location={quote(location, safe='')}", PLATFORM)
    assert through.status == 302 and carried
    assert through.header("location") == direct.header("location"), location
    assert "127.0.0.1" not in through.header("location")[0] or location.startswith(("http://127.0.0.1:1", "ORIGINX"))


async def test_a_path_url_app_sets_no_platform_cookie_and_cannot_take_over_the_origin(site: Site) -> None:
    through, direct, carried = await both(site, "/apps/alice/a/hostile", PLATFORM)
    assert carried and through.status == 200
    assert through.header("set-cookie") == direct.header("set-cookie") == ["theme=dark; Path=/"]
    for name in ("service-worker-allowed", "clear-site-data"):
        assert through.header(name) == direct.header(name) == [], name
    host, _direct, _ = await both(site, "/hostile", f"alice-a.{DOMAIN}")  # its own origin: its business
    assert host.header("service-worker-allowed") == ["/"]


async def test_modes_other_than_trusted_never_put_a_path_url_on_haproxy(site: Site) -> None:
    """redirect (the default) and sandboxed are Python's: turning trust off takes every path entry out of
    HAProxy's map at once, and turning it back on puts them back, without touching host URLs."""
    stack = site.stack
    try:
        for mode in ("redirect", "sandboxed"):
            stack.set_path_mode(mode)  # type: ignore[arg-type]
            assert haproxy_paths(stack) == []
            through, direct, carried = await both(site, "/apps/alice/a/hostile", PLATFORM)
            assert not carried and through.summary() == direct.summary()
            assert through.status == (307 if mode == "redirect" else 200)
            if mode == "sandboxed":
                assert through.header("content-security-policy")[0].startswith("sandbox ")
                assert through.header("set-cookie") == []
            host, _, carried = await both(site, "/x", f"alice-a.{DOMAIN}")
            assert carried and host.json.get("tag") == "a"
    finally:
        stack.set_path_mode("trusted")
    assert "/apps/alice/a" in haproxy_paths(stack) and "/apps/bob/vault" not in haproxy_paths(stack)


async def test_a_dead_instance_falls_back_to_python_with_the_visitors_path(site: Site) -> None:
    """The slot's backup is Python: it must get `/apps/o/n/x` as the visitor sent it (not the app's `/x`,
    which on the platform's origin would be a platform page), and answer as for a dead app."""
    stack = site.stack
    runner, origin = stack.loop.call(_start(tagged_app("doomed")))
    site.origins["doomed"] = origin
    site.route("frank/doomed", "doomed")
    site.route("frank/kept", "doomed", strip_base_path=False)
    for prefix in ("/apps/frank/doomed", "/apps/Frank/Kept"):
        through, _, carried = await both(site, f"{prefix}/x?q=1", PLATFORM)
        assert (through.json.get("tag"), carried) == ("doomed", True)
    stack.loop.call(runner.cleanup())  # the app dies; its route has not heard yet
    for prefix in ("/apps/frank/doomed", "/apps/Frank/Kept"):
        for _ in range(2):  # the first connection refused, then the server marked down
            through, direct, carried = await both(site, f"{prefix}/settings/tokens?q=1", PLATFORM)
            assert not carried and through.status == 502, prefix  # Python's answer for a dead app
            assert through.summary() == direct.summary() and through.json["error"] == "502 Bad Gateway"


def test_long_space_ids_stay_on_python(site: Site) -> None:
    """The prefix travels to the Python backup in a PROXY v2 unique id (127 bytes): longer ones are not
    mapped as path URLs (their host URL still is)."""
    long_name = "n" * 90
    site.route(f"alice/{long_name}", "a")
    mapped = site.stack.dataplane.mapped() if site.stack.dataplane else {}
    assert mapped[f"alice/{long_name}"].path_key is None and mapped["alice/a"].path_key == "/apps/alice/a"
