"""The OpenID Connect provider's machine endpoints: discovery, JWKS, token, userinfo (sign-in for apps).

The browser side (/oauth/authorize, the consent page) is in web/routes/oauth.py. Errors follow
RFC 6749 section 5.2: JSON `{"error", "error_description"}`, 400 or 401.
"""

from __future__ import annotations

import base64
import binascii
import html
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from controller.api.deps import DB, PlatformDep
from controller.domain.oauth import OAuthProblem
from controller.services import oauth

router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def problem_response(problem: OAuthProblem) -> JSONResponse:
    headers = dict(NO_STORE)
    if problem.status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{problem.error}"'
    return JSONResponse({"error": problem.error, "error_description": problem.description},
                        status_code=problem.status, headers=headers)


@router.get("/.well-known/openid-configuration")
def openid_configuration(platform: PlatformDep) -> dict[str, Any]:
    return oauth.discovery(platform.settings)


@router.get(oauth.JWKS_PATH)
def jwks(db: DB, platform: PlatformDep) -> dict[str, Any]:
    return oauth.jwks(db, platform)


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """client_secret_basic (RFC 6749 2.3.1: form-urlencoded id and secret) or client_secret_post."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthProblem("invalid_client", "Malformed Basic authorization header.", 401) from None
        return unquote(client_id), unquote(secret)
    return form.get("client_id", ""), form.get("client_secret", "")


async def _form(request: Request) -> dict[str, str]:
    async with request.form() as form:
        return {key: value for key, value in form.items() if isinstance(value, str)}


@router.post(oauth.TOKEN_PATH)
def token(request: Request, form: Annotated[dict[str, str], Depends(_form)], db: DB,
          platform: PlatformDep) -> Response:
    try:
        if form.get("grant_type") != "authorization_code":
            raise OAuthProblem("unsupported_grant_type", "Only grant_type=authorization_code is supported.")
        client_id, secret = _client_credentials(request, form)
        client = oauth.authenticate_client(db, platform, client_id, secret)
        answer = oauth.exchange_code(db, platform, client, form.get("code", ""), form.get("redirect_uri", ""),
                                     form.get("code_verifier") or None)
    except OAuthProblem as problem:  # the request's session still commits: a reused code's revocations stand
        return problem_response(problem)
    return JSONResponse(answer, headers=NO_STORE)


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise OAuthProblem("invalid_token", "Pass the access token as `Authorization: Bearer <token>`.", 401)
    return value.strip()


@router.api_route(oauth.USERINFO_PATH, methods=["GET", "POST"])
def userinfo(request: Request, db: DB, platform: PlatformDep) -> Response:
    try:
        return JSONResponse(oauth.userinfo(db, platform.settings, _bearer(request)), headers=NO_STORE)
    except OAuthProblem as problem:
        return problem_response(problem)


@router.get("/oauth/avatars/{name}.svg")
def avatar(name: str) -> Response:
    """The `picture` of userinfo: an initial on a disc (Spaceport keeps no avatar images)."""
    initial = html.escape((name[:1] or "?").upper())
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
           '<circle cx="32" cy="32" r="32" fill="#4f6bed"/><text x="32" y="42" font-size="30" text-anchor="middle" '
           f'fill="#fff" font-family="sans-serif">{initial}</text></svg>')
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

