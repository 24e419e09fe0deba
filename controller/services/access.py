"""Who may view a private space through the proxy: its owner/org members, by token or browser session."""

from __future__ import annotations

from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any

from starlette.concurrency import run_in_threadpool

from controller.domain.errors import SpaceportError
from controller.services import spaces
from controller.services.accounts import Principal, authenticate_token, token_from_header
from controller.services.platform import Platform
from controller.services.websession import SESSION_COOKIE, principal_from_cookie


def _token(authorization: str) -> str | None:
    try:
        return token_from_header(authorization)
    except SpaceportError:
        return None


class SpaceAccess:
    """The proxy's AccessPolicy, checked only for private spaces (public ones skip the database)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def may_view(self, route: Any, scope: Mapping[str, Any]) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return await run_in_threadpool(self._check, route.owner, route.name, headers)

    def _check(self, owner: str, name: str, headers: dict[str, str]) -> bool:
        with self.platform.sessions() as session:
            principal = self._principal(session, headers)
            space = spaces.find_space(session, owner, name)
            return space is not None and spaces.can_read(session, principal, space)

    def _principal(self, session: Any, headers: dict[str, str]) -> Principal | None:
        token = _token(headers.get("authorization", ""))
        if token:
            try:
                return authenticate_token(session, token)
            except SpaceportError:
                return None
        cookie = SimpleCookie(headers.get("cookie", ""))
        morsel = cookie.get(SESSION_COOKIE)
        return principal_from_cookie(self.platform.settings.key, morsel.value if morsel else None, session)
