"""Browser sessions: a signed cookie carrying the user id, plus a CSRF token bound to it."""

from __future__ import annotations

import hashlib
import hmac

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from controller.db.models import Account
from controller.services.accounts import Principal

SESSION_COOKIE = "spaceport_session"
MAX_AGE = 14 * 24 * 3600


def _serializer(key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt="spaceport-session")


def sign_session(key: str, user_id: int) -> str:
    return _serializer(key).dumps({"uid": user_id})


def principal_from_cookie(key: str, cookie: str | None, session: Session) -> Principal | None:
    if not cookie:
        return None
    try:
        data = _serializer(key).loads(cookie, max_age=MAX_AGE)
    except BadSignature:
        return None
    user = session.get(Account, int(data.get("uid", 0)))
    if user is None or user.kind != "user":
        return None
    return Principal(user=user, scope="write", token_name=None)


def csrf_token(key: str, cookie: str) -> str:
    """Per-session CSRF token (HMAC of the session cookie): forms must echo it back."""
    return hmac.new(key.encode(), b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()


def check_csrf(key: str, cookie: str | None, submitted: str | None) -> bool:
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(csrf_token(key, cookie), submitted)
