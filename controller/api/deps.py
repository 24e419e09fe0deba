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


def get_principal(request: Request, session: Annotated[Session, Depends(get_db)]) -> Principal | None:
    return principal_from_request(request, session)


def require_principal(principal: Annotated[Principal | None, Depends(get_principal)]) -> Principal:
    if principal is None:
        raise Unauthorized("Authentication required: pass `Authorization: Bearer <token>` (create one with `spaceport tokens create USER`).")
    return principal


def get_short_principal(request: Request,
                        session: Annotated[Session, Depends(get_db, scope="function")]) -> Principal | None:
    return principal_from_request(request, session)


DB = Annotated[Session, Depends(get_db)]
# For streaming responses (logs, file downloads): the session closes when the endpoint returns, before
# the body is sent, so a long or slow stream holds no pool connection.
ShortDB = Annotated[Session, Depends(get_db, scope="function")]
ShortCaller = Annotated[Principal | None, Depends(get_short_principal)]
Caller = Annotated[Principal | None, Depends(get_principal)]
User = Annotated[Principal, Depends(require_principal)]
PlatformDep = Annotated[Platform, Depends(get_platform)]
