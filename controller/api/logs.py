"""Build and run logs as Server-Sent Events in the HF shape: `data: {"timestamp": ..., "data": ...}`.

A stream holds no database connection: the endpoint checks access in a short session that closes before
the first byte is sent, and following streams read from a shared in-memory feed (controller.api.logfeeds):
one poller per build, one reader per instance, however many visitors follow them. Open streams are
capped per client address and per space (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from controller.api.deps import DB, Caller, PlatformDep
from controller.api.limits import StreamLimiter, StreamLimitReached
from controller.api.logfeeds import MAX_LINE, Feed, Line, LogHub, closing
from controller.db.models import Build
from controller.domain.masking import Masker
from controller.runtimes.base import Runtime
from controller.services import builds, instances, spaces
from controller.services.buildlogs import read_lines, secret_masker
from controller.services.platform import Platform

router = APIRouter(prefix="/api/spaces", tags=["logs"])
KEEPALIVE = 15.0
POLL = 0.3
RETRY_AFTER = "10"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DOC: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    429: {"description": "Too many open log streams from this address or on this space"},
}


def sse_event(text: str, ts: datetime | None = None) -> bytes:
    stamp = (ts or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return f"data: {json.dumps({'timestamp': stamp, 'data': text})}\n\n".encode()


class LimitedStream(StreamingResponse):
    """An SSE response that gives its stream slot back however it ends (done, error, client gone)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _admit(request: Request, space_id: int, stream: Callable[[], AsyncIterator[bytes]]) -> Response:
    limiter: StreamLimiter = request.app.state.stream_limiter
    client = request.client.host if request.client else "unknown"
    try:
        limiter.acquire(client, space_id)
    except StreamLimitReached as refused:
        return JSONResponse({"error": refused.message, "code": "too_many_streams"}, status_code=429,
                            headers={"Retry-After": RETRY_AFTER, "X-Error-Message": refused.message})
    return LimitedStream(stream(), lambda: limiter.release(client, space_id))


async def _relay(feed: Feed, masker: Masker,
                 fill_gap: Callable[[int], Awaitable[list[Line]]] | None = None) -> AsyncIterator[bytes]:
    """Send a feed's lines to one follower: history first, then new lines as they come, until it ends."""
    seq = 0
    while True:
        lines, gap = feed.since(seq)
        if gap and fill_gap is not None:  # joined late: the start of the build comes from the database
            lines = await fill_gap(seq) or lines
        if lines:
            for line in lines:
                seq = line.seq
                yield sse_event(masker(line.text), line.ts)
            continue
        if feed.done:
            return
        if not await feed.changed(KEEPALIVE):
            yield b": keep-alive\n\n"


# ----------------------------------------------------------------------------- build logs


@router.get("/{owner}/{name}/logs/build", response_class=StreamingResponse, responses=SSE_DOC)
def build_logs(owner: str, name: str, db: DB, caller: Caller, platform: PlatformDep, request: Request,
               follow: bool = True) -> Response:
    space = spaces.get_space(db, caller, owner, name)
    build = builds.latest_build(db, space)
    # lines are masked when stored; masking again with today's secrets covers secrets added since
    masker = secret_masker(db, platform, space)
    build_id = build.id if build else None
    hub: LogHub = request.app.state.log_hub
    return _admit(request, space.id, lambda: _build_stream(hub, platform, build_id, follow, masker))


async def _build_stream(hub: LogHub, platform: Platform, build_id: int | None, follow: bool,
                        masker: Masker) -> AsyncIterator[bytes]:
    if build_id is None:
        yield sse_event("No build yet: push a commit to main to start one.")
        return
    if not follow:
        seq = 0
        while lines := await _stored(platform, build_id, seq):
            for line in lines:
                seq = line.seq
                yield sse_event(masker(line.text), line.ts)
        return
    async with hub.follow(f"build:{build_id}", lambda: _build_source(platform, build_id)) as feed:
        async for chunk in _relay(feed, masker, lambda seq: _stored(platform, build_id, seq)):
            yield chunk


async def _build_source(platform: Platform, build_id: int) -> AsyncIterator[Line]:
    """The one poller of a build's stored lines (a short session per poll) until the build is over."""
    seq = 0
    while True:
        lines, active = await asyncio.to_thread(_poll, platform, build_id, seq)
        for line in lines:
            seq = line.seq
            yield line
        if not lines:
            if not active:
                return
            await asyncio.sleep(POLL)


async def _stored(platform: Platform, build_id: int, after: int) -> list[Line]:
    return (await asyncio.to_thread(_poll, platform, build_id, after))[0]


def _poll(platform: Platform, build_id: int, after: int) -> tuple[list[Line], bool]:
    with platform.sessions() as session:
        build = session.get(Build, build_id)  # status first: lines written before it finished are all seen
        active = build is not None and build.status in builds.ACTIVE
        lines = [Line(r.seq, r.text, r.ts) for r in read_lines(session, build_id, after)]
        return lines, active


# ----------------------------------------------------------------------------- run logs


@router.get("/{owner}/{name}/logs/run", response_class=StreamingResponse, responses=SSE_DOC)
def run_logs(owner: str, name: str, db: DB, caller: Caller, platform: PlatformDep, request: Request,
             follow: bool = True) -> Response:
    """The app's own output (the serving instance, else the newest one), secrets masked."""
    space = spaces.get_space(db, caller, owner, name)
    instance = instances.log_instance(db, space)
    masker = secret_masker(db, platform, space)  # one masker per stream
    hub: LogHub = request.app.state.log_hub
    runtime: Runtime = request.app.state.runtime
    return _admit(request, space.id, lambda: _run_stream(hub, runtime, instance, follow, masker))


async def _run_stream(hub: LogHub, runtime: Runtime, instance: str | None, follow: bool,
                      masker: Masker) -> AsyncIterator[bytes]:
    if instance is None:
        yield sse_event("The app has not started yet.")
        return
    if not follow:
        async with closing(runtime.logs(instance, False)) as lines:
            async for text in lines:
                yield sse_event(masker(text.rstrip("\n")[:MAX_LINE]))
        return
    async with hub.follow(f"run:{instance}", lambda: _run_source(runtime, instance)) as feed:
        async for chunk in _relay(feed, masker):
            yield chunk


async def _run_source(runtime: Runtime, instance: str) -> AsyncIterator[Line]:
    """The one reader of an instance's output, shared by all its followers."""
    seq = 0
    async with closing(runtime.logs(instance, True)) as lines:
        async for text in lines:
            seq += 1
            yield Line(seq, text.rstrip("\n"), datetime.now(UTC))
