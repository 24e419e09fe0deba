"""Browser sessions: a signed cookie carrying the user id and a random session id, plus a CSRF token bound to it.

The session id's hash is stored (WebSession): logout deletes it, so a copied cookie stops working then,
not only when its signature expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller.db.models import Account, WebSession, utcnow
from controller.services.accounts import Principal, hash_token

SESSION_COOKIE = "spaceport_session"
MAX_AGE = 14 * 24 * 3600


def _serializer(key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt="spaceport-session")


def start_session(session: Session, key: str, user_id: int) -> str:
    """Record a new login and return its cookie value (the caller commits)."""
    cutoff = utcnow() - timedelta(seconds=MAX_AGE)
    session.execute(delete(WebSession).where(WebSession.user_id == user_id, WebSession.created_at < cutoff))
    sid = secrets.token_urlsafe(32)
    session.add(WebSession(user_id=user_id, token_hash=hash_token(sid)))
    session.flush()
    return _serializer(key).dumps({"uid": user_id, "sid": sid})


def _session_id(key: str, cookie: str | None) -> tuple[int, str] | None:
    if not cookie:
        return None
    try:
        data = _serializer(key).loads(cookie, max_age=MAX_AGE)
    except BadSignature:
        return None
    uid, sid = data.get("uid") if isinstance(data, dict) else None, data.get("sid") if isinstance(data, dict) else None
    if not isinstance(uid, int) or not isinstance(sid, str):
        return None  # e.g. a cookie from before sessions were kept server side
    return uid, sid


def end_session(session: Session, key: str, cookie: str | None) -> None:
    """Logout: the cookie's session is deleted, so the cookie is worthless from now on (the caller commits)."""
    found = _session_id(key, cookie)
    if found is not None:
        session.execute(delete(WebSession).where(WebSession.token_hash == hash_token(found[1])))


def principal_from_cookie(key: str, cookie: str | None, session: Session) -> Principal | None:
    found = _session_id(key, cookie)
    if found is None:
        return None
    uid, sid = found
    row = session.scalar(select(WebSession).where(WebSession.token_hash == hash_token(sid)))
    if row is None or row.user_id != uid:
        return None
    user = session.get(Account, uid)
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
