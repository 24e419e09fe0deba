"""ZeroGPU HTTP: the device API the `spaces` package calls, the caller's quota, and the proxy's X-IP-Token.

Device API: `/zerogpu/<instance capability>/{startup-report,schedule,allow,release,queue-size}`, in the
exact shapes of spaces/zero/api.py (0.51.x). The capability is the only credential: it names the
instance and carries a MAC of the site key (controller.domain.zerogpu.instance_capability), so an app can
neither spend another space's quota nor release another's lease; a bad one gets 404.

`VisitorTokens` is an ASGI middleware outside the app proxy: on traffic bound for a space on a zero-*
flavor it drops any client-supplied X-IP-Token and adds one signed by the site for this space and this
visitor (the signed-in user of a platform token, else the client address).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from controller.api.deps import DB, User
from controller.domain import zerogpu as dz
from controller.domain.errors import SpaceportError
from controller.proxy.routes import RouteTable
from controller.proxy.types import Route
from controller.services import zerogpu as zs
from controller.services.accounts import authenticate_token, token_from_header
from controller.services.platform import Platform

router = APIRouter(tags=["zerogpu"])  # the caller's quota (the main app only)
device_router = APIRouter()  # what the `spaces` package calls: the main app and the device listener
log = logging.getLogger(__name__)
PING_INTERVAL = 5.0  # < the package's 60 s read timeout; each event must arrive in its own chunk
TOKEN_HEADER = b"x-ip-token"
Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def service(request: Request) -> zs.ZeroGpu:
    return request.app.state.zerogpu  # type: ignore[no-any-return]


async def _caller(request: Request, capability: str) -> zs.Caller | None:
    return await service(request).acaller(capability)


NOT_FOUND = JSONResponse({"detail": "Not Found"}, status_code=404)


@device_router.post("/zerogpu/{capability}/startup-report", include_in_schema=False)
async def startup_report(request: Request, capability: str) -> Response:
    caller = await _caller(request, capability)
    return Response(status_code=200) if caller else NOT_FOUND


def _schedule_json(lease: dz.Lease) -> dict[str, Any]:
    return {"idle": lease.idle, "nvidiaIndex": lease.device.index, "nvidiaUUID": lease.device.uuid,
            "allowToken": lease.token}


@device_router.post("/zerogpu/{capability}/schedule", include_in_schema=False)
async def schedule(request: Request, capability: str, cgroupPath: str = "", taskId: int = 0,
                   enableQueue: bool = True, tokenVersion: int = 1, durationSeconds: str | None = None,
                   gpuSize: str | None = None, token: str | None = None) -> Response:
    caller = await _caller(request, capability)
    if caller is None:
        return NOT_FOUND
    duration = _duration(durationSeconds)
    zero = service(request)
    outcome = await zero.schedule(caller, token, duration, enableQueue)
    if isinstance(outcome, zs.Granted):
        return JSONResponse(_schedule_json(outcome.lease))
    if isinstance(outcome, zs.Refused):
        headers: dict[str, str] = {"X-Approve-Result": outcome.approval.result}
        if outcome.auth:
            headers["X-Authenticated"] = outcome.auth
        wait = outcome.approval.wait  # whole seconds: the package prints it as a timedelta ("Try again in 1:02:03")
        body = {"left": outcome.approval.left, "wait": math.ceil(wait) if wait >= 0 else -1}
        return JSONResponse(body, status_code=429, headers=headers)
    if isinstance(outcome, zs.Queued):
        timeout = zero.platform.settings.zerogpu_queue_timeout
        return StreamingResponse(_queue_events(zero, outcome, timeout), media_type="text/event-stream",
                                 headers={"X-Queuing-Reason": "node", "Cache-Control": "no-cache"})
    return JSONResponse({"detail": "No GPU of this flavor is in the pool now"}, status_code=503)


def _duration(raw: str | None) -> int | None:
    """The package sends round(seconds); anything else (a float, garbage, a huge number) is -1: illegal."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return -1
    return value if -1 <= value <= 10**6 else -1


async def _queue_events(zero: zs.ZeroGpu, queued: zs.Queued, timeout: float) -> AsyncIterator[bytes]:
    """`event: ping` while waiting, then `succeeded` with the schedule JSON, or `failed` at the timeout.
    The package parses each network chunk as exactly one event, so events are spaced, never batched."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                zero.give_up(queued.request)
                yield b"event: failed\n\n"
                return
            done, _ = await asyncio.wait({queued.future}, timeout=min(PING_INTERVAL, left))
            if done and queued.future.cancelled():  # the instance went away (ZeroGpu.forget)
                yield b"event: failed\n\n"
                return
            if done:
                lease = queued.future.result()
                yield f"event: succeeded\ndata: {json.dumps(_schedule_json(lease))}\n\n".encode()
                return
            yield b"event: ping\n\n"
    finally:
        if not queued.future.done():
            zero.give_up(queued.request)
            queued.future.cancel()


@device_router.post("/zerogpu/{capability}/allow", include_in_schema=False)
async def allow(request: Request, capability: str, allowToken: str, pid: int) -> Response:
    caller = await _caller(request, capability)
    if caller is None:
        return NOT_FOUND
    if not await service(request).allow(caller, allowToken, pid):
        return JSONResponse({"detail": "No such lease for this instance, or the pid is not one of its processes"},
                            status_code=403)
    return Response(status_code=200)


@device_router.post("/zerogpu/{capability}/release", include_in_schema=False)
async def release(request: Request, capability: str, allowToken: str, fail: bool = False) -> Response:
    caller = await _caller(request, capability)
    if caller is None or not await service(request).release(caller, allowToken, fail):
        return NOT_FOUND
    return Response(status_code=200)


@device_router.get("/zerogpu/{capability}/queue-size", include_in_schema=False)
async def queue_size(request: Request, capability: str) -> Response:
    caller = await _caller(request, capability)
    if caller is None:
        return NOT_FOUND
    return JSONResponse(float(service(request).queue_size(caller)))


@router.get("/api/spaces/zero-gpu/quota")
def my_quota(db: DB, principal: User) -> dict[str, Any]:
    """The signed-in caller's ZeroGPU seconds today (the hosted Hub documents no such endpoint)."""
    now = datetime.now(UTC)
    view = zs.quota_of(db, dz.user_visitor(principal.user.id), now)
    return {"user": principal.user.name, "limitSeconds": view.limit, "usedSeconds": round(view.used, 3),
            "remainingSeconds": max(0, round(view.limit - view.used, 3)), "resetAt": view.reset_at.isoformat()}


# ---- the proxy side: X-IP-Token -------------------------------------------------------------------------


def _user_id(platform: Platform, authorization: str) -> int | None:
    """The user a platform token in `authorization` names, None for none or a bad one (then: anonymous)."""
    try:
        token = token_from_header(authorization)
        if not token:
            return None
        with platform.tx() as session:
            return authenticate_token(session, token).user.id
    except SpaceportError:
        return None


class VisitorTokens:
    """ASGI: replace X-IP-Token on requests bound for zero-* spaces (see the module docstring)."""

    def __init__(self, app: ASGI, *, platform: Platform, routes: RouteTable, apps_domain: str,
                 path_prefix: str = "/apps/", clock: Callable[[], float] = time.time) -> None:
        self.app, self.platform, self.routes, self.clock = app, platform, routes, clock
        self.suffix = "." + (apps_domain or "localhost").lower().split(":")[0].strip(".")
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] in ("http", "websocket"):
            route = self._route(scope)
            if route is not None:
                scope = await self._with_token(scope, route)
        await self.app(scope, receive, send)

    def _route(self, scope: Scope) -> Route | None:
        """The route of the space this request is bound for (by host or by path URL), if any."""
        host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1").lower()
        hostname = host.rsplit(":", 1)[0]
        if hostname.endswith(self.suffix) and "." not in hostname[: -len(self.suffix)]:
            return self.routes.by_slug(hostname[: -len(self.suffix)])
        path: str = scope.get("path", "")
        if path.startswith(self.path_prefix):
            owner, _, rest = path[len(self.path_prefix):].partition("/")
            return self.routes.by_space(owner, rest.partition("/")[0]) if owner and rest else None
        return None

    async def _with_token(self, scope: Scope, route: Route) -> Scope:
        """Drop the visitor's X-IP-Token; on a route that takes one (routing.needs_visitor_token) add ours."""
        headers = [(k, v) for k, v in scope["headers"] if k != TOKEN_HEADER]
        if route.visitor_token:
            visitor = await self._visitor(scope)
            settings = self.platform.settings
            token = dz.sign_visitor_token(settings.key, settings.public_url, route.space_id, visitor, self.clock())
            headers.append((TOKEN_HEADER, token.encode()))
        return {**scope, "headers": headers}

    async def _visitor(self, scope: Scope) -> dz.Visitor:
        for key, value in scope["headers"]:
            if key in (b"authorization", b"x-hf-authorization"):
                user = await run_in_threadpool(_user_id, self.platform, value.decode("latin-1"))
                if user is not None:
                    return dz.user_visitor(user)
        client = scope.get("client")
        return dz.anonymous_visitor(client[0] if client else "unknown")


def install(app: FastAPI, platform: Platform, runtime: Any) -> None:
    """Mount the device API and the quota endpoint (before the routers whose /api/spaces/{owner}/{name}
    would match zero-gpu/quota) and keep the service on app.state (the platform listener serves the
    device API to sandboxed apps: controller/api/listener.py)."""
    pid = getattr(runtime, "pid", None)
    app.state.zerogpu = zs.ZeroGpu(platform, supervisor_pid=pid if callable(pid) else (lambda _name: None))
    app.include_router(device_router)
    app.include_router(router)


def device_app(zero: zs.ZeroGpu) -> FastAPI:
    """Only the device API, over a ZeroGPU service (the benches serve it on loopback)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.zerogpu = zero
    app.include_router(device_router)
    return app
