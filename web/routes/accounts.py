"""Log in / out, optional sign-up, and the access tokens page."""

from __future__ import annotations

from fastapi import APIRouter, Form
from fastapi.responses import Response

from controller.domain.errors import NotFound, SpaceportError
from controller.proxy.appauth import safe_next as appauth_safe_next
from controller.services import accounts
from controller.services.throttle import LoginThrottle
from controller.services.websession import MAX_AGE, SESSION_COOKIE, end_session, start_session
from web.context import CSRF, WebDep
from web.routing import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after login (see appauth.safe_next)."""
    return appauth_safe_next(target)


def secure_cookies(web: WebDep) -> bool:
    """Cookies only over TLS when the site is served over https."""
    return web.platform.settings.public_url.lower().startswith("https://")


def logged_in(web: WebDep, user_id: int, target: str | None) -> Response:
    cookie = start_session(web.session, web.platform.settings.key, user_id)
    web.session.commit()
    response = web.redirect(safe_next(target))
    response.set_cookie(SESSION_COOKIE, cookie, max_age=MAX_AGE, httponly=True, samesite="lax", path="/",
                        secure=secure_cookies(web))
    return response


def _client(web: WebDep) -> str:
    return web.request.client.host if web.request.client else "unknown"


@router.get("/login")
def login_page(web: WebDep, next: str | None = None) -> Response:
    return web.render("login.html", next=safe_next(next), username="")


@router.post("/login", dependencies=[CSRF])
def login(web: WebDep, username: str = Form(""), password: str = Form(""), next: str = Form("/")) -> Response:
    throttle: LoginThrottle = web.request.app.state.login_throttle
    name, client = username.strip(), _client(web)
    wait = throttle.retry_after(name, client)
    if wait is not None:
        web.flashes.append(("error", f"Too many failed logins for {name!r} from your address: try again in {wait} s "
                                     "(or ask an admin to set a new password)."))
        response = web.render("login.html", status=429, next=safe_next(next), username=username)
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        user = accounts.authenticate_password(web.session, name, password)
    except SpaceportError as error:
        throttle.failed(name, client)
        web.fail(error)
        return web.render("login.html", status=401, next=safe_next(next), username=username)
    throttle.succeeded(name, client)
    return logged_in(web, user.id, next)


@router.post("/logout", dependencies=[CSRF])
def logout(web: WebDep) -> Response:
    end_session(web.session, web.platform.settings.key, web.request.cookies.get(SESSION_COOKIE))
    web.session.commit()
    response = web.redirect("/")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure_cookies(web), httponly=True, samesite="lax")
    return response


@router.get("/signup")
def signup_page(web: WebDep) -> Response:
    if not web.platform.settings.allow_signup:
        raise NotFound("Sign-up is closed on this Spaceport: ask an admin for an account.")
    return web.render("signup.html", username="")


@router.post("/signup", dependencies=[CSRF])
def signup(web: WebDep, username: str = Form(""), password: str = Form("")) -> Response:
    if not web.platform.settings.allow_signup:
        raise NotFound("Sign-up is closed on this Spaceport: ask an admin for an account.")
    try:
        user = accounts.create_user(web.session, username.strip(), password=password)
        web.session.commit()
    except SpaceportError as error:
        web.fail(error)
        return web.render("signup.html", status=400, username=username)
    return logged_in(web, user.id, "/")


@router.get("/settings/tokens")
def tokens_page(web: WebDep) -> Response:
    principal = web.require_user()
    return web.render("tokens.html", tokens=accounts.list_tokens(web.session, principal.user), new_token=None)


@router.post("/settings/tokens", dependencies=[CSRF])
def create_token(web: WebDep, name: str = Form("web"), scope: str = Form("read")) -> Response:
    principal = web.require_user()
    new_token = None
    try:
        new_token = accounts.create_token(web.session, principal.user, name.strip() or "web", scope)
        web.session.commit()
    except SpaceportError as error:
        web.fail(error)
    tokens = accounts.list_tokens(web.session, principal.user)
    return web.render("tokens.html", status=200 if new_token else 400, tokens=tokens, new_token=new_token)


@router.post("/settings/tokens/{token_id}/revoke", dependencies=[CSRF])
def revoke_token(web: WebDep, token_id: int) -> Response:
    principal = web.require_user()
    accounts.revoke_token(web.session, principal.user, token_id)
    web.session.commit()
    return web.redirect("/settings/tokens")
