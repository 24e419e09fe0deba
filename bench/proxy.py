"""Proxy benchmark: Spaceport's data planes (HAProxy, ProxyMiddleware) vs direct vs nginx, on loopback.

    .venv/bin/python bench/proxy.py [--duration 5] [--connections 50]

Upstreams: nginx serving a small static file (fast, so the proxy's own cost shows) and a tiny aiohttp
app (SSE and WebSocket echo). Spaceport's proxy runs under uvicorn (uvloop + httptools) in its own
process; nginx runs as a reverse proxy with keepalive upstreams (1 worker); Spaceport's HAProxy data
plane runs the config controller/dataplane renders (1 thread, like nginx), the Python proxy as its
default backend, routes programmed through the runtime API on host URLs and on path URLs (`/apps/o/n/`,
as a site with SPACEPORT_PATH_APPS=trusted), which is also timed (route update latency: one
`DataPlane.apply` that swaps a space to another instance). HTTP load comes from `wrk`
(`apt-get install -y wrk`) with a Python aiohttp fallback. Everything is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream static_up {{ server 127.0.0.1:{static_port}; keepalive 64; }}
  upstream app_up {{ server 127.0.0.1:{app_port}; keepalive 64; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{ listen 127.0.0.1:{static_port} backlog=4096; root {tmp}/www; }}
  server {{
    listen 127.0.0.1:{nginx_port} backlog=4096;
    location /static/ {{ proxy_pass http://static_up/; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host $host; }}
    location /app/ {{ proxy_pass http://app_up/; proxy_http_version 1.1; proxy_buffering off;
      proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host; proxy_read_timeout 1h; }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


# ---- child processes ----------------------------------------------------------------------------
def serve_upstream(port: int) -> None:
    """Tiny aiohttp app: /hello, /sse?n=N, /ws echo."""
    from aiohttp import WSMsgType, web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(int(request.query.get("n", "1000"))):
            await resp.write(f"data: {i}\n\n".encode())
        await resp.write_eof()
        return resp

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws_echo)
    import uvloop

    uvloop.install()
    # aiohttp's default listen backlog is 128: a proxy that opens 200 upstream connections at once (the
    # WebSocket figure) overflowed it, and each dropped SYN cost a 1 s retransmit (the ~1.1 s totals that
    # moved between proxies from run to run; TcpExtListenOverflows counted them)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


def serve_proxy(port: int, static_port: int, app_port: int) -> None:
    """Spaceport's ProxyMiddleware under uvicorn (uvloop, httptools), routes bench/static and bench/app."""
    import uvicorn
    from starlette.applications import Starlette

    from controller.proxy import ProxyMiddleware, Route, RouteTable, ThrottledActivity

    class AllowAll:
        async def may_view(self, route: Route, scope: object) -> bool:
            return True

    table = RouteTable(
        [
            Route(space_id="bench/static", slug="bench-static", target=f"http://127.0.0.1:{static_port}"),
            Route(space_id="bench/app", slug="bench-app", target=f"http://127.0.0.1:{app_port}"),
        ]
    )
    app = ProxyMiddleware(
        Starlette(),
        apps_domain="apps.localhost",
        routes=table,
        activity=ThrottledActivity(),
        access=AllowAll(),
        activator=None,
        path_mode="trusted",  # measure forwarding on /apps/... URLs (the site default redirects them)
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )


def serve_minimal(port: int, static_port: int, app_port: int) -> None:
    """Reference: the smallest useful aiohttp ASGI proxy (no routing, no streaming, no headers)."""
    import aiohttp
    import uvicorn

    targets = {"static": f"http://127.0.0.1:{static_port}", "app": f"http://127.0.0.1:{app_port}"}
    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict, receive: object, send: Any) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        session = state.get("s") or state.setdefault("s", aiohttp.ClientSession())
        _, which, rest = scope["path"].split("/", 2)
        async with session.get(f"{targets[which]}/{rest}") as resp:
            body = await resp.read()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=False,
    )


@contextlib.contextmanager
def child(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(port)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- load ---------------------------------------------------------------------------------------
@dataclass
class HttpResult:
    rps: float
    p50_ms: float
    p99_ms: float


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_latency(text: str, pct: str) -> float:
    match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def wrk(url: str, duration: int, connections: int, host: str = "") -> HttpResult:
    extra = ["-H", f"Host: {host}"] if host else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if "Non-2xx" in out or rps is None:
        raise RuntimeError(f"wrk against {url} failed:\n{out}")
    return HttpResult(float(rps.group(1)), _wrk_latency(out, "50"), _wrk_latency(out, "99"))


async def python_load(url: str, total: int, connections: int, host: str = "") -> HttpResult:
    import aiohttp

    latencies: list[float] = []
    remaining = total
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                async with client.get(url, headers={"Host": host} if host else None) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{url}: {resp.status}")
                latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    qs = statistics.quantiles(latencies, n=100)
    return HttpResult(total / elapsed, qs[49], qs[98])


def http_load(url: str, duration: int, connections: int) -> HttpResult:
    """`url` may carry a Host to send after a space: "http://127.0.0.1:1/x host.name"."""
    url, _, host = url.partition(" ")
    if shutil.which("wrk"):
        return wrk(url, duration, connections, host)
    return asyncio.run(python_load(url, 3000 * duration, connections, host))


async def sse_time(url: str, events: int, runs: int = 5) -> float:
    """Median seconds to receive `events` SSE events."""
    import aiohttp

    url, _, host = url.partition(" ")
    times = []
    async with aiohttp.ClientSession() as client:
        for _ in range(runs):
            start = time.perf_counter()
            seen = 0
            async with client.get(f"{url}?n={events}", headers={"Host": host} if host else None) as resp:
                async for line in resp.content:
                    seen += line.startswith(b"data:")
            if seen != events:
                raise RuntimeError(f"{url}: got {seen} events")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


async def ws_round_trips(url: str, sockets: int, rounds: int) -> tuple[float, float]:
    """`sockets` concurrent websockets, `rounds` echo round trips each: (total seconds, p99 ms)."""
    import aiohttp

    latencies: list[float] = []
    url, _, host = url.partition(" ")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:

        async def one(i: int) -> None:
            async with client.ws_connect(url, headers={"Host": host} if host else None) as ws:
                for r in range(rounds):
                    start = time.perf_counter()
                    await ws.send_str(f"{i}:{r}")
                    if await ws.receive_str() != f"{i}:{r}":
                        raise RuntimeError("bad echo")
                    latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(sockets)))
        return time.perf_counter() - began, statistics.quantiles(latencies, n=100)[98]


# ---- report -------------------------------------------------------------------------------------
def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right" if name != header[0] else "left")
    for row in rows:
        table.add_row(*row)
    Console(width=150).print(table)


def run(args: argparse.Namespace) -> None:
    static_port, app_port, proxy_port, nginx_port, minimal_port, hap_port = (free_port() for _ in range(6))
    py = sys.executable
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="spaceport-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must read www/
        (tmp / "www").mkdir()
        (tmp / "www" / "index.html").write_text("hello from a static upstream\n")
        conf = tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(tmp=tmp, static_port=static_port, app_port=app_port, nginx_port=nginx_port)
        )
        with (
            child(["nginx", "-c", str(conf), "-p", str(tmp)], nginx_port, tmp / "nginx.out"),
            child([py, me, "--serve-upstream", str(app_port)], app_port, tmp / "upstream.log"),
            child(
                [py, me, "--serve-proxy", str(proxy_port), str(static_port), str(app_port)],
                proxy_port,
                tmp / "proxy.log",
            ),
            child(
                [py, me, "--serve-minimal", str(minimal_port), str(static_port), str(app_port)],
                minimal_port,
                tmp / "minimal.log",
            ),
            haproxy_plane(tmp, hap_port, proxy_port, static_port, app_port) as update_ms,
        ):
            measure(args, static_port, app_port, proxy_port, nginx_port, minimal_port, hap_port)
            print_updates(update_ms)


HAP_DOMAIN = "apps.localhost"


@contextlib.contextmanager
def haproxy_plane(tmp: Path, port: int, python_port: int, static_port: int, app_port: int) -> Iterator[list[float]]:
    """Spaceport's HAProxy data plane in front of the Python proxy; yields route update latencies (ms)."""
    from controller.dataplane.haproxy import HAProxyProcess, Layout
    from controller.dataplane.plane import DataPlane
    from controller.proxy import Route

    layout = Layout("127.0.0.1", port, python_port, tmp / "haproxy", HAP_DOMAIN,
                    ("spaceport_session", "spaceport_csrf", "spaceport_app_session"), "sp_", slots=64, threads=1)
    haproxy = HAProxyProcess(layout, quiet=True)
    haproxy.start()
    try:
        plane = DataPlane(haproxy, HAP_DOMAIN, lambda _space, _now: None, paths=True)
        static = Route(space_id="bench/static", slug="bench-static", target=f"http://127.0.0.1:{static_port}")
        app = Route(space_id="bench/app", slug="bench-app", target=f"http://127.0.0.1:{app_port}")
        plane.apply(app.space_id, app)
        updates = []
        for i in range(201):  # swap bench/static between two addresses of the same upstream (redeploys)
            target = f"http://{'127.0.0.2' if i % 2 else '127.0.0.1'}:{static_port}"  # ends on the one nginx serves
            started = time.perf_counter()
            plane.apply(static.space_id, Route(space_id="bench/static", slug="bench-static", target=target))
            updates.append((time.perf_counter() - started) * 1000)
            plane.poll()  # deletes the drained server, as the data plane's poller does every 2 s
        yield updates[1:]
    finally:
        haproxy.stop()


def print_updates(update_ms: list[float]) -> None:
    qs = statistics.quantiles(update_ms, n=100)
    print_table(
        f"Route update through HAProxy's runtime API ({len(update_ms)} swaps of a running space to a new "
        "instance: add server, enable, old to maintenance, map entry; no reload)",
        ["p50 ms", "p99 ms", "max ms"],
        [[f"{qs[49]:.3f}", f"{qs[98]:.3f}", f"{max(update_ms):.3f}"]],
    )


def measure(
    args: argparse.Namespace,
    static_port: int,
    app_port: int,
    proxy_port: int,
    nginx_port: int,
    minimal_port: int,
    hap_port: int,
) -> None:
    targets = {
        "static upstream (nginx file)": {
            "direct": f"http://127.0.0.1:{static_port}/index.html",
            "spaceport haproxy": f"http://127.0.0.1:{hap_port}/index.html bench-static.{HAP_DOMAIN}",
            "spaceport haproxy path": f"http://127.0.0.1:{hap_port}/apps/bench/static/index.html",
            "spaceport python proxy": f"http://127.0.0.1:{proxy_port}/apps/bench/static/index.html",
            "nginx proxy": f"http://127.0.0.1:{nginx_port}/static/index.html",
            "minimal aiohttp proxy": f"http://127.0.0.1:{minimal_port}/static/index.html",
        },
        "aiohttp upstream /hello": {
            "direct": f"http://127.0.0.1:{app_port}/hello",
            "spaceport haproxy": f"http://127.0.0.1:{hap_port}/hello bench-app.{HAP_DOMAIN}",
            "spaceport haproxy path": f"http://127.0.0.1:{hap_port}/apps/bench/app/hello",
            "spaceport python proxy": f"http://127.0.0.1:{proxy_port}/apps/bench/app/hello",
            "nginx proxy": f"http://127.0.0.1:{nginx_port}/app/hello",
            "minimal aiohttp proxy": f"http://127.0.0.1:{minimal_port}/app/hello",
        },
    }
    rows = []
    for upstream, paths in targets.items():
        results = {via: http_load(url, args.duration, args.connections) for via, url in paths.items()}
        for via, res in results.items():
            rows.append(
                [
                    upstream,
                    via,
                    f"{res.rps:,.0f}",
                    f"{res.p50_ms:.2f}",
                    f"{res.p99_ms:.2f}",
                    f"{res.rps / results['direct'].rps:.2f}",
                    f"{res.rps / results['nginx proxy'].rps:.2f}",
                    f"{res.p50_ms - results['direct'].p50_ms:+.2f}",
                ]
            )
    tool = "wrk -t1" if shutil.which("wrk") else "python aiohttp"
    print_table(
        f"HTTP GET, {args.connections} connections, {args.duration}s each ({tool})",
        ["upstream", "via", "req/s", "p50 ms", "p99 ms", "x direct", "x nginx", "p50 vs direct ms"],
        rows,
    )
    print_added_latency(targets, args.duration, tool)

    streams = {
        "direct": (f"http://127.0.0.1:{app_port}", f"ws://127.0.0.1:{app_port}/ws"),
        "spaceport haproxy": (
            f"http://127.0.0.1:{hap_port} bench-app.{HAP_DOMAIN}",
            f"ws://127.0.0.1:{hap_port}/ws bench-app.{HAP_DOMAIN}",
        ),
        "spaceport haproxy path": (
            f"http://127.0.0.1:{hap_port}/apps/bench/app",
            f"ws://127.0.0.1:{hap_port}/apps/bench/app/ws",
        ),
        "spaceport python proxy": (
            f"http://127.0.0.1:{proxy_port}/apps/bench/app",
            f"ws://127.0.0.1:{proxy_port}/apps/bench/app/ws",
        ),
        "nginx proxy": (f"http://127.0.0.1:{nginx_port}/app", f"ws://127.0.0.1:{nginx_port}/app/ws"),
    }
    sse = {via: asyncio.run(sse_time(_join(http, "/sse"), args.sse_events)) for via, (http, _) in streams.items()}
    ws = {
        via: asyncio.run(ws_round_trips(url, args.websockets, args.ws_rounds))
        for via, (_, url) in streams.items()
    }
    rows = [
        [
            via,
            f"{sse[via] * 1000:.1f}",
            f"{sse[via] / sse['direct']:.2f}",
            f"{sse[via] / sse['nginx proxy']:.2f}",
            f"{ws[via][0] * 1000:.0f}",
            f"{ws[via][1]:.2f}",
            f"{ws[via][0] / ws['direct'][0]:.2f}",
            f"{ws[via][0] / ws['nginx proxy'][0]:.2f}",
        ]
        for via in streams
    ]
    print_table(
        f"SSE: {args.sse_events} events (median of 5)  |  WebSocket: {args.websockets} concurrent sockets x "
        f"{args.ws_rounds} echo round trips",
        ["via", "SSE ms", "x direct", "x nginx", "WS total ms", "WS p99 ms", "x direct", "x nginx"],
        rows,
    )


def print_added_latency(targets: dict[str, dict[str, str]], duration: int, tool: str) -> None:
    """One connection, one request at a time: the latency a proxy adds to a request, with no queue.

    Under saturation (the table above) a p50 is mostly time spent waiting behind the other connections'
    requests, so it measures throughput again (Little's law) and grows with the connection count; here
    every request finds every process idle, which is the latency a visitor of a quiet space sees."""
    rows = []
    for upstream, paths in targets.items():
        results = {via: http_load(url, duration, 1) for via, url in paths.items()}
        for via, res in results.items():
            rows.append([upstream, via, f"{res.p50_ms * 1000:.0f}", f"{res.p99_ms * 1000:.0f}",
                         f"{(res.p50_ms - results['direct'].p50_ms) * 1000:+.0f}",
                         f"{(res.p99_ms - results['direct'].p99_ms) * 1000:+.0f}"])  # fmt: skip
    print_table(
        f"Added latency: HTTP GET over 1 connection, one request at a time, {duration}s each ({tool})",
        ["upstream", "via", "p50 us", "p99 us", "p50 vs direct us", "p99 vs direct us"],
        rows,
    )


def _join(url: str, path: str) -> str:
    """"http://h:1 host" + "/sse" -> "http://h:1/sse host" (the Host to send stays last)."""
    base, _, host = url.partition(" ")
    return f"{base}{path} {host}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per HTTP load run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--sse-events", type=int, default=1000)
    parser.add_argument("--websockets", type=int, default=200)
    parser.add_argument("--ws-rounds", type=int, default=10)
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", type=int, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve-minimal", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
    elif args.serve_proxy:
        serve_proxy(*args.serve_proxy)
    elif args.serve_minimal:
        serve_minimal(*args.serve_minimal)
    else:
        if not shutil.which("nginx"):
            sys.exit("nginx is required (apt-get install -y nginx-light)")
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        run(args)


if __name__ == "__main__":
    main()
