"""Request dependencies: the platform, a DB session per request, and who is calling."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from controller.domain.errors import Unauthorized
from controller.services.accounts import Principal, authenticate_token, token_from_header
from controller.services.platform import Platform
from controller.services.websession import SESSION_COOKIE, principal_from_cookie


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def get_db(platform: Annotated[Platform, Depends(get_platform)]) -> Iterator[Session]:
    with platform.sessions() as session, session.begin():
        yield session


def principal_from_request(request: Request, session: Session) -> Principal | None:
    token = token_from_header(request.headers.get("authorization"))
    if token:
        return authenticate_token(session, token)
    return cookie_principal(request, session)


def cookie_principal(request: Request, session: Session) -> Principal | None:
    """The web session (signed cookie); only for safe methods in the API, so no CSRF is possible."""
    if request.method not in ("GET", "HEAD"):
        return None
    key = get_platform(request).settings.key
    return principal_from_cookie(key, request.cookies.get(SESSION_COOKIE), session)


# Every request's session is function-scoped: it commits (or rolls back) when the endpoint has returned and its
# response is serialized, before a byte is sent. With FastAPI's default request scope the commit ran after the
# response went out, so a client could see 200 for a row it could not read yet, or for a commit that then failed.
# Streams (logs, file downloads) hold no pool connection for the same reason.
DB = Annotated[Session, Depends(get_db, scope="function")]


def get_principal(request: Request, session: DB) -> Principal | None:
    return principal_from_request(request, session)


def require_principal(principal: Annotated[Principal | None, Depends(get_principal, scope="function")]) -> Principal:
    if principal is None:
        raise Unauthorized("Authentication required: pass `Authorization: Bearer <token>` (create one with `spaceport tokens create USER`).")
    return principal


Caller = Annotated[Principal | None, Depends(get_principal, scope="function")]
User = Annotated[Principal, Depends(require_principal, scope="function")]
PlatformDep = Annotated[Platform, Depends(get_platform)]
