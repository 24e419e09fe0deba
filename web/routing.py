"""Routes of the web UI render errors as HTML pages (not the API's JSON) and send guests to /login."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from controller.domain.errors import SpaceportError
from web.context import TEMPLATES, LoginRequired, Web, login_url

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class WebRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return RedirectResponse(login_url(request), status_code=303)
            except SpaceportError as error:
                return error_page(request, error.status, error.message)

        return route


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    web: Web | None = getattr(request.state, "web", None)
    if web is not None:
        return web.render("error.html", status=status, status_code=status, message=message)
    context = {"web": None, "request": request, "status_code": status, "message": message}
    return TEMPLATES.TemplateResponse(request, "error.html", context, status_code=status)
