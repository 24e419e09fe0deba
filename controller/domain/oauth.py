"""Sign-in for apps (hf_oauth), the pure part: a space's OAuth settings from its README, scopes,
which redirect URIs a space's client may use, and PKCE.

Hosted Spaces' rules (huggingface.co/docs/hub/spaces-oauth): `hf_oauth: true` creates the app's
client; `openid profile` are always granted, `hf_oauth_scopes` adds documented scopes;
`hf_oauth_expiration_minutes` is the access token's lifetime (default 480, at most 43200, 30 days);
`hf_oauth_authorized_org` (one name or a list) restricts sign-in to members of those organizations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_SCOPES = ("openid", "profile")
# The scopes the hosted platform documents for OAuth apps; only write-repos/manage-repos may change things.
SCOPES: dict[str, str] = {
    "openid": "Know who you are (an ID token)",
    "profile": "See your user name, full name and avatar",
    "email": "See your email address",
    "read-repos": "Read your spaces, including private ones",
    "write-repos": "Read and push to your spaces",
    "manage-repos": "Create, change and delete your spaces",
    "inference-api": "Call inference on your behalf",
    "write-discussions": "Open discussions on your behalf",
    "read-billing": "See your billing information",
}
WRITE_SCOPES = frozenset({"write-repos", "manage-repos"})
READ_SCOPE = "read-repos"
DEFAULT_EXPIRATION_MINUTES = 480
MAX_EXPIRATION_MINUTES = 43200
CODE_LIFETIME_SECONDS = 300
CALLBACK_PATH = "/login/callback"  # where gradio's LoginButton and huggingface_hub's attach_huggingface_oauth land


class OAuthProblem(Exception):
    """A refused OAuth request: `error` is the RFC 6749 code, `description` says what to fix."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True)
class OAuthConfig:
    """What a space's README asks of sign-in for apps."""

    scopes: tuple[str, ...]
    expiration_minutes: int
    authorized_orgs: tuple[str, ...]
    ignored: tuple[str, ...] = ()  # README values that were not used, each a sentence

    @property
    def scope_text(self) -> str:
        return " ".join(self.scopes)


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _expiration(value: Any, ignored: list[str]) -> int:
    if value is None:
        return DEFAULT_EXPIRATION_MINUTES
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        ignored.append(f"hf_oauth_expiration_minutes {value!r} is not a positive whole number of minutes; "
                       f"using {DEFAULT_EXPIRATION_MINUTES}.")
        return DEFAULT_EXPIRATION_MINUTES
    if value > MAX_EXPIRATION_MINUTES:
        ignored.append(f"hf_oauth_expiration_minutes {value} is above the maximum; using {MAX_EXPIRATION_MINUTES}.")
        return MAX_EXPIRATION_MINUTES
    return value


def config_from_card(card: dict[str, Any] | None) -> OAuthConfig | None:
    """The space's sign-in settings, or None when its README does not set `hf_oauth: true`."""
    card = card or {}
    if card.get("hf_oauth") is not True:
        return None
    ignored: list[str] = []
    scopes = list(DEFAULT_SCOPES)
    for scope in _names(card.get("hf_oauth_scopes")):
        if scope not in SCOPES:
            ignored.append(f"hf_oauth_scopes: unknown scope {scope[:60]!r} (known: {', '.join(SCOPES)}).")
        elif scope not in scopes:
            scopes.append(scope)
    orgs = tuple(dict.fromkeys(_names(card.get("hf_oauth_authorized_org"))))
    minutes = _expiration(card.get("hf_oauth_expiration_minutes"), ignored)
    return OAuthConfig(scopes=tuple(scopes), expiration_minutes=minutes, authorized_orgs=orgs, ignored=tuple(ignored))


def requested_scopes(requested: str | None, config: OAuthConfig) -> tuple[str, ...]:
    """The scopes an authorize request asks for: a subset of the space's (none asked: the space's own)."""
    asked = tuple(dict.fromkeys((requested or "").split())) or config.scopes
    extra = [scope for scope in asked if scope not in config.scopes]
    if extra:
        raise OAuthProblem("invalid_scope", f"This space may only ask for {config.scope_text!r}; it asked for "
                           f"{' '.join(extra)[:200]!r}. Add them to hf_oauth_scopes in its README.md.")
    return asked


def token_scope(scopes: tuple[str, ...]) -> str:
    """The platform scope an access token with these OAuth scopes carries: "write" with write-repos or
    manage-repos, "read" with read-repos (the user's private spaces too), else "identity" (who the user is,
    and what anyone may see: the hosted platform's openid/profile tokens read no private repo either)."""
    if WRITE_SCOPES.intersection(scopes):
        return "write"
    return "read" if READ_SCOPE in scopes else "identity"


def browser_redirect(redirect_uri: str, app_origin: str) -> str:
    """Where the browser goes back to with the code; refuses any URI outside the space's own origin.

    `app_origin` is the space's host URL (scheme://host[:port]). Gradio builds its callback as
    `https://{SPACE_HOST}/login/callback` whatever the site serves; on a site whose apps are served
    over plain http the same host's https form is accepted and the browser is sent to the http one.
    """
    try:
        parts = urlsplit(redirect_uri)
        origin = urlsplit(app_origin)
        port, want_port = parts.port, origin.port
    except ValueError:
        raise OAuthProblem("invalid_request", "redirect_uri is not a valid URL.") from None
    same_host = (parts.hostname or "").lower() == (origin.hostname or "").lower() and port == want_port
    scheme_ok = parts.scheme == origin.scheme or (parts.scheme == "https" and origin.scheme == "http")
    if not same_host or not scheme_ok or parts.username or parts.password or parts.fragment:
        raise OAuthProblem("invalid_request", f"redirect_uri must be on this space's own address {app_origin} "
                           f"(e.g. {app_origin}{CALLBACK_PATH}); {redirect_uri[:200]!r} is not.")
    return urlunsplit((origin.scheme, parts.netloc, parts.path or "/", parts.query, ""))


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check_pkce(challenge: str | None, method: str | None, verifier: str | None) -> None:
    """RFC 7636: a code issued with a challenge needs its verifier (S256 or plain)."""
    if challenge is None:
        if verifier:
            raise OAuthProblem("invalid_grant", "code_verifier sent for a code that was issued without PKCE.")
        return
    if not verifier:
        raise OAuthProblem("invalid_grant", "This code was issued with PKCE: send its code_verifier.")
    computed = s256(verifier) if method == "S256" else verifier
    if not hmac.compare_digest(computed, challenge):
        raise OAuthProblem("invalid_grant", "code_verifier does not match the code_challenge.")


def check_challenge_method(challenge: str | None, method: str | None) -> str | None:
    if challenge is None:
        return None
    method = method or "plain"
    if method not in ("S256", "plain"):
        raise OAuthProblem("invalid_request", "code_challenge_method must be S256 or plain.")
    if not 43 <= len(challenge) <= 128:
        raise OAuthProblem("invalid_request", "code_challenge must be 43 to 128 characters (RFC 7636).")
    return method
