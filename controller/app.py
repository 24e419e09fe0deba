"""create_app(settings) -> the ASGI app: API, git, web UI and the app proxy in one server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from controller.api import repos as repos_api
from controller.api import spaces as spaces_api
from controller.config import Settings
from controller.domain.errors import SpaceportError
from controller.git import http as git_http
from controller.services.platform import Platform
from controller.tasks import make_celery

log = logging.getLogger(__name__)


def _error_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpaceportError)
    header = exc.message.encode("latin-1", "replace").decode("latin-1")[:1000]
    headers = {"X-Error-Message": header}
    if exc.hf_code:
        headers["X-Error-Code"] = exc.hf_code
    return JSONResponse({**exc.extra, "error": exc.message, "code": exc.code}, status_code=exc.status, headers=headers)


def create_app(settings: Settings, *, platform: Platform | None = None) -> FastAPI:
    """Build the app. Nothing is created at import time; everything hangs off app.state."""
    platform = platform or Platform(settings)
    celery = make_celery(settings)
    platform.enqueue_build = lambda build_id: celery.send_task("spaceport.build", args=[build_id])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform.migrate()
        yield
        platform.dispose()

    app = FastAPI(title="Spaceport", version="0.1.0", lifespan=lifespan)
    app.state.platform = platform
    app.state.settings = settings
    app.add_exception_handler(SpaceportError, _error_response)
    app.include_router(repos_api.router)
    app.include_router(spaces_api.router)
    app.include_router(git_http.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
