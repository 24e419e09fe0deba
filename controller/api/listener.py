"""The platform listener's HTTP side (controller.services.listener): what an app on this host may call of
the platform, and nothing else.

Routes: ZeroGPU's device API (`/zerogpu/<capability>/...`, the capability is the credential), the OpenID
provider's server-to-server endpoints (discovery, JWKS, token, userinfo: a client secret or an access
token is the credential) and `/api/whoami-v2` (what an app asks with the token its visitor gave it). The
site's other API, the UI and git are not here, so an app that reaches the listener reaches no more than
the internet already could. The main app's exception handlers answer the same way here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from controller.api import oauth as oauth_api
from controller.api import repos as repos_api
from controller.api import zerogpu as zerogpu_api
from controller.services import listener

log = logging.getLogger(__name__)
CONNECTIONS = 512  # the listener's bound on open connections (every app's calls share it)


def listener_app(main: FastAPI) -> FastAPI:
    """The listener's routes over the main app's state (platform, ZeroGPU service) and error handlers."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.platform, app.state.zerogpu = main.state.platform, main.state.zerogpu
    app.include_router(zerogpu_api.device_router)
    app.include_router(oauth_api.router)
    app.add_api_route("/api/whoami-v2", repos_api.whoami, methods=["GET"])
    for exc_class, handler in main.exception_handlers.items():
        app.add_exception_handler(exc_class, handler)
    return app


class _Server(uvicorn.Server):
    """A uvicorn server inside the main one's event loop: the main server keeps the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start(app: FastAPI, address: tuple[str, int]) -> tuple[_Server, asyncio.Task[None]] | None:
    """Bind (a failure is logged with its fix, the site runs on) and serve the listener's app."""
    problem = await run_in_threadpool(listener.prepare)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if problem is not None:
            raise OSError(problem)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        log.warning("the platform listener cannot bind %s:%s (%s): sandboxed zero-* and hf_oauth apps cannot "
                    "reach the platform; fix that, or set SPACEPORT_ZEROGPU_DEVICE_API_URL and "
                    "SPACEPORT_OAUTH_PROVIDER_URL to URLs they reach", address[0], address[1], exc)
        return None
    # log_config/log_level None: a second uvicorn.Config would otherwise re-run the process's logging set-up
    # (the main server's access log and its INFO lines were lost); its requests go to the one access log,
    # capabilities redacted (controller.accesslog)
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level=None,
                            limit_concurrency=CONNECTIONS, timeout_graceful_shutdown=2)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    log.info("platform listener on http://%s:%s (zero-* and hf_oauth apps only)", *address)
    return server, task


async def stop(running: tuple[_Server, asyncio.Task[None]] | None) -> None:
    if running is None:
        return
    server, task = running
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


def install(app: FastAPI) -> None:
    """Run the listener for as long as the app runs, where it binds (its lifespan is wrapped: app.py's stays
    as it is); call after the app's state and exception handlers are set."""
    address = listener.address(app.state.platform.settings)
    if address is None:
        return
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            running = await start(listener_app(a), address)
            try:
                yield state
            finally:
                await stop(running)

    app.router.lifespan_context = lifespan
