"""create_app(settings) -> the ASGI app: API, git, web UI and the app proxy in one server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import web
from controller.api import admin as admin_api
from controller.api import hardware as hardware_api
from controller.api import hub as hub_api
from controller.api import lfs as lfs_api
from controller.api import listener as listener_api
from controller.api import logs as logs_api
from controller.api import oauth as oauth_api
from controller.api import repos as repos_api
from controller.api import spaces as spaces_api
from controller.api import volumes as volumes_api
from controller.api import zerogpu as zerogpu_api
from controller.api.framing import FrameGuard
from controller.api.limits import RequestLimits, StreamLimiter
from controller.api.logfeeds import LogHub
from controller.config import Settings
from controller.domain.errors import SpaceportError
from controller.git import http as git_http
from controller.proxy.activity import ThrottledActivity
from controller.proxy.appauth import AppAuth
from controller.proxy.middleware import ProxyMiddleware
from controller.proxy.routes import RouteTable
from controller.runtimes.base import Runtime
from controller.runtimes.factory import make_runtime, untrusted_push_refusal
from controller.runtimes.posture import security_posture
from controller.services import quotas
from controller.services.access import SpaceAccess
from controller.services.accounts import TOKEN_PREFIX
from controller.services.bus import bus_for
from controller.services.leases import lease_for
from controller.services.platform import Platform
from controller.services.reconciler import Reconciler
from controller.services.replica import Replica
from controller.services.throttle import LoginThrottle
from controller.services.websession import SESSION_COOKIE
from controller.tasks import make_celery
from web.context import CSRF_COOKIE

log = logging.getLogger(__name__)
_HEADER_UNSAFE = re.compile(r"[^\x20-\x7e\xa0-\xff]")  # what an HTTP header value can carry (latin-1 text)


def _error_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpaceportError)
    header = _HEADER_UNSAFE.sub("?", exc.message)[:1000]  # a control char would abort the whole response
    headers = {"X-Error-Message": header}
    if exc.hf_code:
        headers["X-Error-Code"] = exc.hf_code
    return JSONResponse({**exc.extra, "error": exc.message, "code": exc.code}, status_code=exc.status, headers=headers)


def log_posture(settings: Settings, runtime: Runtime) -> None:
    """Say at start how untrusted code is contained, how app origins are kept apart, and egress."""
    for line in security_posture(settings, runtime):
        (log.warning if line.startswith("WARNING") else log.info)("Security posture: %s", line)


def create_app(settings: Settings, *, platform: Platform | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Nothing is created at import time; everything hangs off app.state."""
    platform = platform or Platform(settings)
    celery = make_celery(settings)
    platform.enqueue_build = lambda build_id: celery.send_task("spaceport.build", args=[build_id])
    runtime = runtime or make_runtime(settings, quotas=lambda owner: quotas.owner_limits(platform, owner))
    platform.untrusted_push_refusal = untrusted_push_refusal(settings, runtime)
    log_posture(settings, runtime)
    routes, activity = RouteTable(), ThrottledActivity(interval=5.0)
    reconciler = Reconciler(platform, runtime, routes, activity, interval=settings.reconcile_interval)
    replica = Replica(platform, reconciler, routes, activity, bus_for(settings), lease_for(platform, "leader"),
                      interval=settings.reconcile_interval)
    platform.kick = replica.kick

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform.migrate()
        ready = asyncio.Event()
        task = asyncio.create_task(replica.run(ready.set))
        await asyncio.wait({task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        platform.dispose()

    app = FastAPI(title="Spaceport", version="0.1.0", lifespan=lifespan)
    app.state.platform, app.state.settings, app.state.runtime = platform, settings, runtime
    app.state.reconciler, app.state.replica, app.state.routes = reconciler, replica, routes
    app.state.log_hub = LogHub()
    app.state.stream_limiter = StreamLimiter(settings.streams_per_client, settings.streams_per_space)
    app.state.login_throttle = LoginThrottle(settings.login_attempts, settings.login_window)
    app_auth = AppAuth(settings.key, cookie_max_age=settings.app_session_max_age)
    app.state.app_auth = app_auth
    app.add_exception_handler(SpaceportError, _error_response)
    zerogpu_api.install(app, platform, runtime)  # ZeroGPU device API + quota (issue 15), before /api/spaces/{o}/{n}
    for router in (repos_api.router, hardware_api.router, spaces_api.router, logs_api.router, hub_api.router,
                   admin_api.router, git_http.router, lfs_api.router, oauth_api.router, volumes_api.router):
        app.include_router(router)
    listener_api.install(app)  # the platform listener: device API + OpenID endpoints for sandboxed apps

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "role": replica.role}  # leader or follower (several replicas, issue 14)

    web.install(app)  # last: the UI's /OWNER pages match any single-segment path
    # inside the proxy (added before it): platform requests only, never an app's traffic or responses
    app.add_middleware(RequestLimits, settings=settings)
    app.add_middleware(FrameGuard)
    app.add_middleware(
        ProxyMiddleware, apps_domain=settings.apps_domain or "localhost", routes=routes, activity=activity,
        access=SpaceAccess(platform), activator=replica, path_mode=settings.path_apps,
        public_url=settings.public_url, app_auth=app_auth, token_prefix=TOKEN_PREFIX,
        platform_cookies=(SESSION_COOKIE, CSRF_COOKIE),
    )
    app.add_middleware(zerogpu_api.VisitorTokens, platform=platform, routes=routes, apps_domain=settings.apps_domain)
    return app
