"""Per-request web context: DB session, who is logged in, CSRF, and rendering templates."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from controller.domain.errors import Forbidden, SpaceportError
from controller.services.accounts import Principal
from controller.services.platform import Platform
from controller.services.websession import SESSION_COOKIE, check_csrf, csrf_token, principal_from_cookie
from web import filters

CSRF_COOKIE = "spaceport_csrf"
CSRF_FIELD = "csrf"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
filters.install(TEMPLATES.env)


class LoginRequired(Exception):
    """A page needs a logged-in user: redirect to /login?next=..."""


@dataclass
class Web:
    request: Request
    session: Session
    platform: Platform
    principal: Principal | None
    csrf_basis: str
    new_csrf_cookie: str | None = None
    user_name: str | None = None
    is_admin: bool = False
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.principal is not None:
            self.user_name = self.principal.user.name
            self.is_admin = self.principal.user.is_admin

    @property
    def csrf(self) -> str:
        return csrf_token(self.platform.settings.key, self.csrf_basis)

    def require_user(self) -> Principal:
        if self.principal is None:
            raise LoginRequired()
        return self.principal

    def require_admin(self) -> Principal:
        principal = self.require_user()
        if not principal.user.is_admin:
            raise Forbidden("Only Spaceport admins may see this page.")
        return principal

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(web=self, request=self.request, settings=self.platform.settings)
        response = TEMPLATES.TemplateResponse(self.request, template, context, status_code=status)
        self.attach_cookie(response)
        return response

    def attach_cookie(self, response: Response) -> None:
        if self.new_csrf_cookie:
            response.set_cookie(CSRF_COOKIE, self.new_csrf_cookie, httponly=True, samesite="lax", path="/",
                                secure=self.platform.settings.public_url.lower().startswith("https://"))

    def redirect(self, url: str) -> RedirectResponse:
        response = RedirectResponse(url, status_code=303)
        self.attach_cookie(response)
        return response

    def fail(self, error: SpaceportError) -> None:
        """Undo the request's changes after a refused action (the page then shows the error inline)."""
        self.session.rollback()
        self.flashes.append(("error", error.message))


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def get_session(platform: Annotated[Platform, Depends(get_platform)]) -> Iterator[Session]:
    with platform.sessions() as session:
        yield session


def get_web(request: Request, session: Annotated[Session, Depends(get_session)],
            platform: Annotated[Platform, Depends(get_platform)]) -> Web:
    key = platform.settings.key
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = principal_from_cookie(key, cookie, session)
    nonce = request.cookies.get(CSRF_COOKIE)
    new = None
    if not nonce:
        nonce = new = secrets.token_urlsafe(24)
    basis = cookie if principal is not None and cookie else nonce
    web = Web(request=request, session=session, platform=platform, principal=principal,
              csrf_basis=basis, new_csrf_cookie=new)
    request.state.web = web
    return web


WebDep = Annotated[Web, Depends(get_web)]


async def require_csrf(request: Request, web: WebDep) -> None:
    """Every POST from the UI carries the hidden csrf field bound to the visitor's cookie."""
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    if not isinstance(submitted, str) or not check_csrf(web.platform.settings.key, web.csrf_basis, submitted):
        raise Forbidden("The form expired or did not come from this site (CSRF check failed). Reload the page and try again.")


CSRF = Depends(require_csrf)


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?next={quote(target)}"
