"""Sign-in bridge for private spaces on their own host (`OWNER-NAME.APPS_DOMAIN`).

The platform's session cookie is host-only on the platform's origin, so it never reaches an app's
host. A visitor of a private space's host URL without app credentials is sent to the platform's
`/auth/app?space=o/n&next=...`; with a session and read access, that route issues a short-lived
*bridge token* bound to (space, user, expiry) and redirects to `APP_ORIGIN/__spaceport__/auth?token=...`.
The proxy redeems it for a host-only, signed, short-lived *app cookie* bound to the same space, and
checks that cookie on later requests without a database hop. Both are signed with keys derived from
the platform key for their purpose: a bridge token is never accepted as a cookie, nor a cookie as a
token, and neither is accepted for another space. The cookie is an HS256 JWT (controller.domain.hs256)
so that HAProxy, as the data plane, checks it itself and serves private spaces without Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from controller.domain import hs256

APP_COOKIE = "spaceport_app_session"
AUTH_PATH = "/__spaceport__/auth"
BRIDGE_PATH = "/auth/app"
TOKEN_MAX_AGE = 60


@dataclass(frozen=True, slots=True)
class Grant:
    """What a redeemed bridge token says: who, and whether the app is embedded (cross-site iframe)."""

    user_id: int
    embed: bool


def app_cookie_secret(key: str) -> str:
    """The HS256 secret of app cookies (hex): Python signs and checks with it, HAProxy checks with it."""
    return hs256.derive_secret(key, "spaceport-app-cookie")


class AppAuth:
    """Issues and checks bridge tokens and per-space app cookies (see the module docstring)."""

    def __init__(self, key: str, cookie_max_age: int = 3600, token_max_age: int = TOKEN_MAX_AGE,
                 clock: Callable[[], float] = time.time) -> None:
        self._tokens = URLSafeTimedSerializer(key, salt="spaceport-app-bridge")
        self.cookie_secret = app_cookie_secret(key)
        self.cookie_max_age, self.token_max_age, self.clock = cookie_max_age, token_max_age, clock

    def issue(self, space_id: str, user_id: int, *, embed: bool = False) -> str:
        return self._tokens.dumps({"s": space_id.lower(), "u": user_id, "e": embed})

    def redeem(self, token: str, space_id: str) -> Grant | None:
        data = _load(self._tokens, token, self.token_max_age)
        if data is None or data.get("s") != space_id.lower() or not isinstance(data.get("u"), int):
            return None
        return Grant(user_id=data["u"], embed=bool(data.get("e")))

    def cookie(self, space_id: str, user_id: int) -> str:
        """An HS256 JWT {s: space, u: user, exp}: HAProxy verifies it too (jwt_verify, see dataplane)."""
        expires = int(self.clock()) + self.cookie_max_age
        return hs256.sign(self.cookie_secret, {"s": space_id.lower(), "u": user_id, "exp": expires})

    def check_cookie(self, value: str, space_id: str) -> bool:
        claims = hs256.verify(self.cookie_secret, value, self.clock()) if value else None
        return claims is not None and claims.get("s") == space_id.lower()

    def set_cookie_header(self, value: str, *, secure: bool, embed: bool) -> bytes:
        """Host-only (no Domain), HttpOnly, short-lived. Embedded apps live in a cross-site iframe, where
        browsers keep only `SameSite=None; Secure; Partitioned` cookies (CHIPS, keyed to the top site)."""
        attrs = f"{APP_COOKIE}={value}; Path=/; Max-Age={self.cookie_max_age}; HttpOnly"
        if embed:
            return f"{attrs}; SameSite=None; Secure; Partitioned".encode()
        return f"{attrs}; SameSite=Lax{'; Secure' if secure else ''}".encode()


def _load(serializer: URLSafeTimedSerializer, value: str, max_age: int) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        data = serializer.loads(value, max_age=max_age)
    except BadSignature:  # also SignatureExpired
        return None
    return data if isinstance(data, dict) else None


def safe_next(target: str | None) -> str:
    """A same-origin relative path, or "/": never a redirect to another host.

    Refuses scheme-relative `//host`, backslashes (browsers read `/\\host` as `//host`) and any
    control character or space (browsers drop tabs/newlines, so `/\\t/host` would become `//host`).
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    return target
