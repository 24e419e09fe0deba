"""Compact HS256 JWTs (RFC 7519) signed with a secret derived from the site key for one purpose.

The secret is a hex string and its ASCII bytes are the HMAC key, so that HAProxy's `jwt_verify("HS256",
"<secret>")` checks the very tokens Python signs (the data plane verifies private spaces' app cookies
itself). `verify` accepts only the header this module writes' algorithm (HS256: no `none`, no RS/HS
confusion) and an integer `exp` in the future.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

HEADER = {"alg": "HS256", "typ": "JWT"}


def derive_secret(key: str, purpose: str) -> str:
    """The secret for `purpose` (64 hex characters): tokens of one purpose are never valid for another."""
    return hashlib.sha256(f"{purpose}:{key}".encode()).hexdigest()


def sign(secret: str, claims: dict[str, Any]) -> str:
    head, body = _b64(_json(HEADER)), _b64(_json(claims))
    return f"{head}.{body}.{_b64(_mac(secret, f'{head}.{body}'))}"


def verify(secret: str, token: str, now: float) -> dict[str, Any] | None:
    """The claims of a token this secret signed that has not expired, else None."""
    parts = token.split(".")
    if len(parts) != 3 or not hmac.compare_digest(_b64(_mac(secret, f"{parts[0]}.{parts[1]}")), parts[2]):
        return None
    try:
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return None
    expires = claims.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool) or now >= expires:
        return None
    return claims


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _mac(secret: str, message: str) -> bytes:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
