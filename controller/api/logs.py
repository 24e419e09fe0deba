"""Build and run logs as Server-Sent Events in the HF shape: `data: {"timestamp": ..., "data": ...}`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from controller.api.deps import DB, Caller, PlatformDep
from controller.db.models import Build
from controller.domain.masking import Masker
from controller.services import builds, instances, spaces
from controller.services.buildlogs import read_lines, secret_masker
from controller.services.platform import Platform

router = APIRouter(prefix="/api/spaces", tags=["logs"])
KEEPALIVE = 15.0
POLL = 0.3
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DOC: dict[int | str, dict[str, object]] = {200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}}


def sse_event(text: str, ts: datetime | None = None) -> bytes:
    stamp = (ts or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return f"data: {json.dumps({'timestamp': stamp, 'data': text})}\n\n".encode()


@router.get("/{owner}/{name}/logs/build", response_class=StreamingResponse, responses=SSE_DOC)
def build_logs(owner: str, name: str, db: DB, caller: Caller, platform: PlatformDep, request: Request,
               follow: bool = True) -> StreamingResponse:
    space = spaces.get_space(db, caller, owner, name)
    build = builds.latest_build(db, space)
    # lines are masked when stored; masking again with today's secrets covers secrets added since
    stream = _build_stream(platform, request, build.id if build else None, follow, secret_masker(db, platform, space))
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


async def _build_stream(platform: Platform, request: Request, build_id: int | None, follow: bool,
                        masker: Masker) -> AsyncIterator[bytes]:
    if build_id is None:
        yield sse_event("No build yet: push a commit to main to start one.")
        return
    seq, idle = 0, 0.0
    while True:
        lines, active = await run_in_threadpool(_poll, platform, build_id, seq)
        for line in lines:
            seq = line.seq
            yield sse_event(masker(line.text), line.ts)
        if not lines and (not follow or not active):
            return
        if lines:
            idle = 0.0
            continue
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL)
        idle += POLL
        if idle >= KEEPALIVE:
            idle = 0.0
            yield b": keep-alive\n\n"


def _poll(platform: Platform, build_id: int, after: int) -> tuple[list, bool]:  # type: ignore[type-arg]
    with platform.sessions() as session:
        lines = read_lines(session, build_id, after)
        build = session.get(Build, build_id)
        active = build is not None and build.status in builds.ACTIVE
        return lines, active


@router.get("/{owner}/{name}/logs/run", response_class=StreamingResponse, responses=SSE_DOC)
def run_logs(owner: str, name: str, db: DB, caller: Caller, platform: PlatformDep, request: Request,
             follow: bool = True) -> StreamingResponse:
    """The app's own output (the serving instance, else the newest one), secrets masked."""
    space = spaces.get_space(db, caller, owner, name)
    instance = instances.log_instance(db, space)
    stream = _run_stream(request, instance, follow, secret_masker(db, platform, space))  # one masker per stream
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


async def _run_stream(request: Request, instance: str | None, follow: bool, masker: Masker) -> AsyncIterator[bytes]:
    if instance is None:
        yield sse_event("The app has not started yet.")
        return
    runtime = request.app.state.runtime
    lines = runtime.logs(instance, follow)
    pending = asyncio.ensure_future(anext(lines, None))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
            if not done:
                if await request.is_disconnected():
                    return
                yield b": keep-alive\n\n"
                continue
            line = pending.result()
            if line is None:
                return
            yield sse_event(masker(line.rstrip("\n")))
            pending = asyncio.ensure_future(anext(lines, None))
    finally:
        pending.cancel()
        await lines.aclose()
