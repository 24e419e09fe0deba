"""Request limits at the ASGI level: body size per kind of endpoint, JSON nesting, open log streams.

Bodies: `Content-Length` is checked before anything is read, and streamed (chunked) bytes are counted as
the app reads them, so a body over the limit is refused with 413 without being buffered. Git requests and
the commit API have their own, larger limits. Small JSON bodies are also checked for nesting depth (a
1,000-deep array would otherwise exhaust the parser's recursion limit). This middleware sits inside the
app proxy: app hosts' traffic never reaches it (apps set their own limits).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.config import Settings
from controller.domain.units import format_bytes

_GIT = re.compile(r"^/spaces/[^/]+/[^/]+/(git-upload-pack|git-receive-pack)$")
_COMMIT = re.compile(r"^/api/spaces/[^/]+/[^/]+/(commit|preupload)/")
_LFS_OBJECT = re.compile(r"^/spaces/[^/]+/[^/]+/info/lfs/objects/[0-9a-f]{64}$")
_PAIRS = re.compile(rb"\{[^{}\[\]]*\}|\[[^{}\[\]]*\]")
K = TypeVar("K")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


class BodyTooLarge(HTTPException):
    """Raised from receive() once the streamed body passes the limit; an HTTPException, so the framework
    answers 413 with the message wherever the body was being read (FastAPI re-raises those as they are)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message, headers={"X-Error-Message": message, "Connection": "close"})
        self.message = message


@dataclass(frozen=True)
class Limit:
    max_bytes: int
    setting: str
    check_depth: bool = False


def limit_for(settings: Settings, path: str) -> Limit:
    if _GIT.match(path):
        return Limit(settings.max_push_bytes, "SPACEPORT_MAX_PUSH_BYTES")
    if _COMMIT.match(path):
        return Limit(settings.max_commit_bytes, "SPACEPORT_MAX_COMMIT_BYTES")
    if _LFS_OBJECT.match(path):  # a Git LFS upload (controller.api.lfs checks its declared size too)
        return Limit(settings.max_lfs_object_bytes, "SPACEPORT_MAX_LFS_OBJECT_BYTES")
    return Limit(settings.max_body_bytes, "SPACEPORT_MAX_BODY_BYTES", check_depth=True)


def too_deep(body: bytes, max_depth: int) -> bool:
    """Is any array/object nested deeper than max_depth? (Strings are removed first; C-speed passes.)"""
    if body.count(b"[") + body.count(b"{") < max_depth:
        return False
    rest = _STRINGS.sub(b'""', body)
    for _ in range(max_depth):  # each pass removes the innermost level
        rest, removed = _PAIRS.subn(b"0", rest)
        if not removed:
            return False
    return b"[" in rest or b"{" in rest


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            media = value.split(b";")[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


# A refused body is still read (and dropped) up to this much, so that closing the connection after the
# answer does not reset it while the client is still sending: a reset discards the answer in flight
# (HAProxy in front then reports no response at all). Past it, the connection is closed unread.
DRAIN_BYTES = 16 << 20
DRAIN_SECONDS = 5.0


async def _drain(receive: Receive) -> None:
    """Read and drop the rest of a refused request body, within DRAIN_BYTES and DRAIN_SECONDS."""
    deadline, read = time.monotonic() + DRAIN_SECONDS, 0
    while read <= DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "code": "content_too_large" if status == 413 else "bad_request"}).encode()
    header = message.encode("latin-1", "replace")[:1000]
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-error-message", header), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def too_large_message(limit: Limit) -> str:
    return (f"The request body is larger than this endpoint's limit of {format_bytes(limit.max_bytes)} "
            f"({limit.max_bytes} bytes; the site's admin sets it with {limit.setting}).")


class RequestLimits:
    """Plain ASGI middleware (Starlette style): 413 over the size limit, 400 for too deeply nested JSON."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(self.settings, scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            if declared <= DRAIN_BYTES:
                await _drain(receive)
            await _send_error(send, 413, too_large_message(limit))
            return
        if limit.check_depth and _is_json(scope):
            checked = await self._checked_json(receive, send, limit)
            if checked is None:
                return
            receive = checked
        await self._counted(scope, receive, send, limit)

    async def _checked_json(self, receive: Receive, send: Send, limit: Limit) -> Receive | None:
        """Read a small JSON body whole (the app would buffer it anyway), check its depth, replay it."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # disconnected: let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive)
                await _send_error(send, 413, too_large_message(limit))
                return None
            more = message.get("more_body", False)
        body = b"".join(chunks)
        depth = self.settings.max_json_depth
        if too_deep(body, depth):
            await _send_error(send, 400, f"The JSON body is nested more than {depth} levels deep: send flatter "
                              "data (the limit is SPACEPORT_MAX_JSON_DEPTH).")
            return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: Limit) -> None:
        total, started, more = 0, False, True

        async def counting_receive() -> Message:
            nonlocal total, more
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
                if total > limit.max_bytes:
                    raise BodyTooLarge(too_large_message(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            if more:
                await _drain(receive)
            await _send_error(send, 413, exc.message)
        except BaseExceptionGroup as group:  # raised inside a task group (e.g. a streaming request body)
            matched, rest = group.split(BodyTooLarge)
            if matched is None or rest is not None or started:
                raise
            if more:
                await _drain(receive)
            await _send_error(send, 413, too_large_message(limit))


# ----------------------------------------------------------------------------- log streams


class StreamLimitReached(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class StreamLimiter:
    """Counts open log streams per client address and per space in this process (endpoints run in threads)."""

    per_client: int
    per_space: int
    clients: Counter[str] = field(default_factory=Counter)
    spaces: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, client: str, space_id: int) -> None:
        with self._lock:
            if self.clients[client] >= self.per_client:
                raise StreamLimitReached(
                    f"Too many open log streams from your address (at most {self.per_client}, "
                    "SPACEPORT_STREAMS_PER_CLIENT): close some (e.g. other tabs) and retry.")
            if self.spaces[space_id] >= self.per_space:
                raise StreamLimitReached(
                    f"Too many open log streams on this space (at most {self.per_space}, "
                    "SPACEPORT_STREAMS_PER_SPACE): retry in a little while.")
            self.clients[client] += 1
            self.spaces[space_id] += 1

    def release(self, client: str, space_id: int) -> None:
        with self._lock:
            _decrement(self.clients, client)
            _decrement(self.spaces, space_id)

    def open_streams(self) -> int:
        with self._lock:
            return sum(self.clients.values())


def _decrement(counter: Counter[K], key: K) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
