"""Load benchmark: the app proxy holding many concurrent long-lived streams; the API beside open log streams.

    .venv/bin/python bench/load.py [--seconds 60] [--idle 1000] [--active 200]
    .venv/bin/python bench/load.py --log-streams 200 [--requests 200]      # issue 19

`--log-streams N`: a real `spaceport serve` (embedded defaults, a pushed static space) gets N anonymous
`logs/run?follow=true` SSE streams held open (from one address, so SPACEPORT_STREAMS_PER_CLIENT is raised to
N for the run; the per-client cap is what answers 429 by default), and the bench reports API latency
(p50/p99/max of `--requests` sequential GETs of /api/spaces, a space's info and whoami) with no stream open
and with all N open, plus how many streams stayed open.

Spaceport's ProxyMiddleware runs under uvicorn (uvloop, httptools, as `spaceport serve` does) in its own
process, routing to a tiny aiohttp upstream in another. The client opens `--idle` idle connections
(half SSE streams that get an event every 20 s, half WebSockets that stay quiet) and `--active` busy ones
(half SSE streams at 20 events/s, half WebSockets echoing in a loop), holds them for `--seconds`, then
checks every idle one still works (a last WebSocket echo; SSE streams still open). It reports drops, event
and echo counts, echo latency, and the proxy's RSS before, at peak and after the connections close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HOST = "bench-app.apps.localhost"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---- child processes ------------------------------------------------------------------------------
def serve_upstream(port: int) -> None:
    """/sse?every=S: an event every S seconds until the client leaves; /ws: echo."""
    import uvloop
    from aiohttp import WSMsgType, web

    async def sse(request: web.Request) -> web.StreamResponse:
        every = float(request.query.get("every", "20"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        i = 0
        await resp.write(b"data: hello\n\n")
        while True:
            await asyncio.sleep(every)
            i += 1
            await resp.write(f"data: {i}\n\n".encode())

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws_echo)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


def serve_proxy(port: int, upstream: int) -> None:
    import uvicorn
    from starlette.applications import Starlette

    from controller.proxy import ProxyMiddleware, Route, RouteTable, ThrottledActivity

    class AllowAll:
        async def may_view(self, route: Route, scope: object) -> bool:
            return True

    table = RouteTable([Route(space_id="bench/app", slug="bench-app", target=f"http://127.0.0.1:{upstream}")])
    app = ProxyMiddleware(Starlette(), apps_domain="apps.localhost", routes=table, activity=ThrottledActivity(),
                          access=AllowAll(), activator=None)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", ws="websockets",
                log_level="warning", access_log=False, backlog=4096, server_header=False, date_header=False)


@contextlib.contextmanager
def child(role: str, port: int, extra: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, __file__, "--role", role, "--port", str(port), *extra]
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


# ---- client ---------------------------------------------------------------------------------------
@dataclass
class Stats:
    opened: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    rtts: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, table: dict[str, int], kind: str, n: int = 1) -> None:
        table[kind] = table.get(kind, 0) + n

    def drop(self, kind: str, why: object) -> None:
        self.add(self.dropped, kind)
        if len(self.errors) < 5:
            self.errors.append(f"{kind}: {why!r}")


async def sse_client(session: aiohttp.ClientSession, base: str, kind: str, every: float, stop: asyncio.Event,
                     stats: Stats) -> None:
    try:
        async with session.get(f"{base}/sse?every={every}", headers={"Host": HOST}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"status {resp.status}")
            stats.add(stats.opened, kind)
            reader = asyncio.ensure_future(_count_events(resp, kind, stats))
            await asyncio.wait({reader, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():  # the stream ended before we left: a drop
                raise RuntimeError(f"stream ended early: {reader.exception() or 'eof'}")
            reader.cancel()
    except Exception as exc:  # every failure is counted as a drop
        stats.drop(kind, exc)


async def _count_events(resp: aiohttp.ClientResponse, kind: str, stats: Stats) -> None:
    async for line in resp.content:
        if line.startswith(b"data:"):
            stats.add(stats.events, kind)


async def ws_client(session: aiohttp.ClientSession, base: str, kind: str, active: bool, stop: asyncio.Event,
                    stats: Stats) -> None:
    """A reader task answers the proxy's pings and collects echoes (as a browser would); idle sockets send
    one message at the end to prove they are still alive, active ones echo in a loop."""
    try:
        async with session.ws_connect(f"{base.replace('http', 'ws', 1)}/ws", headers={"Host": HOST}, heartbeat=None) as ws:
            stats.add(stats.opened, kind)
            echoes: asyncio.Queue[str] = asyncio.Queue()
            reader = asyncio.ensure_future(_read(ws, echoes))
            try:
                while active and not stop.is_set():
                    await _echo(ws, echoes, reader, kind, stats)
                    await asyncio.sleep(0.05)
                await asyncio.wait({reader, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
                await _echo(ws, echoes, reader, kind, stats)  # still alive at the end
            finally:
                reader.cancel()
    except Exception as exc:
        stats.drop(kind, exc)


async def _read(ws: aiohttp.ClientWebSocketResponse, echoes: asyncio.Queue[str]) -> None:
    async for msg in ws:  # control frames (ping/pong) are handled inside receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            echoes.put_nowait(msg.data)


async def _echo(ws: aiohttp.ClientWebSocketResponse, echoes: asyncio.Queue[str], reader: asyncio.Future[None],
                kind: str, stats: Stats) -> None:
    if reader.done():
        raise RuntimeError(f"socket closed early (close code {ws.close_code})")
    start = time.perf_counter()
    await ws.send_str("ping")
    data = await asyncio.wait_for(echoes.get(), 30)
    if data != "ping":
        raise RuntimeError(f"bad echo {data!r}")
    if kind.startswith("active"):
        stats.rtts.append((time.perf_counter() - start) * 1000)
    stats.add(stats.events, kind)


async def run_load(base: str, idle: int, active: int, seconds: float, proxy_pid: int) -> tuple[Stats, dict[str, float]]:
    stats, stop, rss = Stats(), asyncio.Event(), {"before": rss_mib(proxy_pid)}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for i in range(idle):
            tasks.append(sse_client(session, base, "idle SSE", 20, stop, stats) if i % 2 == 0
                         else ws_client(session, base, "idle WebSocket", False, stop, stats))
        for i in range(active):
            tasks.append(sse_client(session, base, "active SSE", 0.05, stop, stats) if i % 2 == 0
                         else ws_client(session, base, "active WebSocket", True, stop, stats))
        running = [asyncio.ensure_future(t) for t in tasks]
        ramp = time.monotonic()
        while sum(stats.opened.values()) + sum(stats.dropped.values()) < len(running) and time.monotonic() - ramp < 60:
            await asyncio.sleep(0.2)
        rss["ramp_s"] = time.monotonic() - ramp
        rss["open"] = rss_mib(proxy_pid)
        peak = rss["open"]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            peak = max(peak, rss_mib(proxy_pid))
        rss["peak"] = peak
        stop.set()
        await asyncio.gather(*running)
    await asyncio.sleep(3)
    rss["after"] = rss_mib(proxy_pid)
    return stats, rss


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


API_PATHS = ("/api/spaces?limit=20", "/api/spaces/bench/site", "/api/whoami-v2")


async def api_latencies(base: str, token: str, requests: int) -> list[float]:
    """Milliseconds of `requests` sequential API GETs (cycling over API_PATHS); any non-200 fails the run."""
    out: list[float] = []
    headers = {"authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(requests):
            started = time.perf_counter()
            async with session.get(base + API_PATHS[i % len(API_PATHS)]) as resp:
                await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"API answered {resp.status} for {API_PATHS[i % len(API_PATHS)]}")
            out.append((time.perf_counter() - started) * 1000)
    return out


async def hold_log_streams(base: str, count: int, ready: asyncio.Event, stop: asyncio.Event, open_now: list[int]) -> None:
    url = f"{base}/api/spaces/bench/site/logs/run?follow=true"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        async def one() -> None:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return
                open_now[0] += 1
                if open_now[0] == count:
                    ready.set()
                with contextlib.suppress(asyncio.TimeoutError, aiohttp.ClientError):
                    while not stop.is_set():
                        await asyncio.wait_for(resp.content.readany(), timeout=1)
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def streams_run(base: str, token: str, count: int, requests: int) -> tuple[list[float], list[float], int]:
    quiet = await api_latencies(base, token, requests)
    ready, stop, open_now = asyncio.Event(), asyncio.Event(), [0]
    holder = asyncio.create_task(hold_log_streams(base, count, ready, stop, open_now))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ready.wait(), timeout=120)
    busy = await api_latencies(base, token, requests)
    still_open = open_now[0]
    stop.set()
    await holder
    return quiet, busy, still_open


def percentiles(values: list[float]) -> list[str]:
    ordered = sorted(values)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return [f"{statistics.median(ordered):.1f}", f"{p99:.1f}", f"{ordered[-1]:.1f}"]


def log_streams_bench(count: int, requests: int) -> None:
    from tests.support.server import make_server
    from tests.support.spaces import push_fixture

    with tempfile.TemporaryDirectory(prefix="spaceport-load-") as tmp:
        server = make_server(Path(tmp), SPACEPORT_STREAMS_PER_CLIENT=str(max(count, 20)),
                             SPACEPORT_STREAMS_PER_SPACE=str(max(count, 100)))
        try:
            server.start()
            token = server.create_user("bench")
            push_fixture(server, Path(tmp), "static", "bench", "site", token)
            quiet, busy, opened = asyncio.run(streams_run(server.url, token, count, requests))
        finally:
            server.stop()
    print(f"spaceport serve (embedded defaults): {requests} sequential API GETs ({', '.join(API_PATHS)}), "
          f"then again with {count} log streams (SSE, follow=true) open")
    print_table("API latency (ms)", ["log streams open", "p50", "p99", "max"],
                [["0", *percentiles(quiet)], [f"{opened} of {count}", *percentiles(busy)]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-streams", type=int, default=0, help="API latency beside this many open log streams")
    parser.add_argument("--requests", type=int, default=200, help="API GETs per measurement (--log-streams)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--active", type=int, default=200)
    parser.add_argument("--role", choices=["client", "upstream", "proxy"], default="client")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", type=int, default=0)
    args = parser.parse_args()
    nofile = raise_nofile()
    if args.log_streams:
        log_streams_bench(args.log_streams, args.requests)
        return
    if args.role == "upstream":
        serve_upstream(args.port)
        return
    if args.role == "proxy":
        serve_proxy(args.port, args.upstream)
        return
    up_port, proxy_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="spaceport-load-") as tmp, \
            child("upstream", up_port, [], Path(tmp) / "upstream.log"), \
            child("proxy", proxy_port, ["--upstream", str(up_port)], Path(tmp) / "proxy.log") as proxy:
        stats, rss = asyncio.run(run_load(f"http://127.0.0.1:{proxy_port}", args.idle, args.active, args.seconds, proxy.pid))
    kinds = ["idle SSE", "idle WebSocket", "active SSE", "active WebSocket"]
    rows = [[k, str(stats.opened.get(k, 0)), str(stats.dropped.get(k, 0)), str(stats.events.get(k, 0))] for k in kinds]
    print(f"proxy: ProxyMiddleware under uvicorn; {args.idle} idle + {args.active} active connections for "
          f"{args.seconds:.0f} s (ramp-up {rss['ramp_s']:.1f} s); RLIMIT_NOFILE {nofile}")
    print_table("connections", ["kind", "opened", "dropped", "events / echoes"], rows)
    rtts = sorted(stats.rtts) or [0.0]
    print_table("active WebSocket echo latency (ms)", ["p50", "p99", "max"],
                [[f"{statistics.median(rtts):.1f}", f"{rtts[int(len(rtts) * 0.99) - 1 if len(rtts) > 1 else 0]:.1f}", f"{rtts[-1]:.1f}"]])
    print_table("proxy RSS (MiB)", ["before", "all open", "peak", "after close"],
                [[f"{rss['before']:.1f}", f"{rss['open']:.1f}", f"{rss['peak']:.1f}", f"{rss['after']:.1f}"]])
    for error in stats.errors:
        print("drop:", error)


if __name__ == "__main__":
    main()
