"""The build egress proxy: an allow-listing HTTP CONNECT proxy, the only way out of a build namespace.

A build's network namespace has no route and nothing is forwarded (netns.ensure_build_firewall); uv
inside is pointed at this proxy (HTTPS_PROXY) on the slot's host address. Only `CONNECT host:443` to
an allowed host is tunnelled (exact names or `.suffix` entries); everything else gets 403 and one line
in the build log saying which setting allows it. TLS is end to end (the proxy only pipes bytes), so
the host's egress (and any TLS-inspecting proxy in front of it) sees ordinary connections.

One proxy serves one build: `EgressProxy(...).start()` runs an asyncio server in its own thread;
`stop()` closes it and every tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

DEFAULT_ALLOW = ("pypi.org", "files.pythonhosted.org")
ALLOWED_PORTS = frozenset({443})
HEADER_LIMIT = 16 * 1024
CONNECT_TIMEOUT = 20.0
SETTING = "SPACEPORT_BUILD_EGRESS_ALLOW"


def allowed(host: str, allow: Iterable[str]) -> bool:
    """`host` is in the allow-list: an exact name, or under a `.suffix` entry."""
    host = host.lower().rstrip(".")
    for entry in allow:
        entry = entry.lower().strip()
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if host == entry:
            return True
    return False


def parse_connect(head: bytes) -> tuple[str, int] | None:
    """(host, port) of a `CONNECT host:port HTTP/1.x` request head, else None."""
    try:
        first = head.split(b"\r\n", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = first.split()
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        return None
    host, sep, port = parts[1].rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in host or "@" in host:
        return None
    return host.strip("[]"), int(port)


@dataclass
class EgressProxy:
    bind_host: str
    port: int
    allow: tuple[str, ...]
    log: Callable[[str], None]
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)

    def start(self) -> EgressProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._client, self.bind_host, self.port))
            except OSError as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"egress-proxy-{self.bind_host}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        async def close() -> None:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        self._thread.join(timeout=10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._serve(reader, writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        if len(head) > HEADER_LIMIT:
            return
        target = parse_connect(head)
        if target is None:
            await self._deny(writer, "only HTTPS (CONNECT) to package indexes is allowed from builds", head)
            return
        host, port = target
        if port not in ALLOWED_PORTS or not allowed(host, self.allow):
            await self._deny(writer, f"{host}:{port} is not an allowed package index host "
                                     f"(allowed: {', '.join(self.allow)}; the admin can add hosts with {SETTING})", head)
            return
        upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    async def _deny(self, writer: asyncio.StreamWriter, why: str, head: bytes) -> None:
        line = f"build egress refused: {why}"
        if line not in self.refused:
            self.refused.append(line)
            self.log(line)
        body = (why + "\n").encode()
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        with contextlib.suppress(OSError):
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
