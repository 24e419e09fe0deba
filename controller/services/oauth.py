"""Sign-in for apps: Spaceport as the OpenID Connect provider of spaces that set `hf_oauth: true`.

One client per such space, registered on its first start (`oauth_env`); its secret is encrypted with
the platform key (the app receives it in clear as OAUTH_CLIENT_SECRET; a duplicate gets its own
client). Authorization code flow: codes and access tokens are stored hashed; a code is single-use,
minutes long, bound to its client, redirect URI and PKCE challenge; ID tokens are RS256 JWTs
(joserfc) signed with a key kept encrypted in the database, published at the JWKS URI.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Settings
from controller.db.models import (
    Account,
    OAuthAccessToken,
    OAuthClient,
    OAuthCode,
    PlatformSetting,
    Space,
    utcnow,
)
from controller.domain import oauth as rules
from controller.domain.errors import Unauthorized
from controller.domain.oauth import OAuthConfig, OAuthProblem
from controller.services import accounts, listener
from controller.services.accounts import Principal, hash_token
from controller.services.platform import Platform
from controller.services.views import app_host

ACCESS_TOKEN_PREFIX = "sp_oauth_"  # still a platform credential (accounts.TOKEN_PREFIX) the proxy keeps from apps
SIGNING_KEY_SETTING = "oauth_signing_key"
AUTHORIZE_PATH, TOKEN_PATH, USERINFO_PATH, JWKS_PATH = "/oauth/authorize", "/oauth/token", "/oauth/userinfo", "/oauth/jwks"


@dataclass(frozen=True)
class AuthorizeRequest:
    client_id: str
    redirect_uri: str
    response_type: str = "code"
    scope: str | None = None
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None


@dataclass(frozen=True)
class Grant:
    """A checked authorize request: the space, its settings, the scopes and where the browser goes back."""

    client: OAuthClient
    space: Space
    config: OAuthConfig
    scopes: tuple[str, ...]
    redirect_to: str  # the browser-facing form of the redirect URI
    challenge_method: str | None


def issuer(settings: Settings) -> str:
    return (settings.public_url or "http://localhost:8000").rstrip("/")


def provider_url(settings: Settings) -> str:
    """OPENID_PROVIDER_URL: where apps fetch the discovery document (server to server): the operator's
    OAUTH_PROVIDER_URL, else the platform listener (the one platform address a sandboxed app reaches),
    else the issuer."""
    return (settings.oauth_provider_url or listener.base_url(settings) or issuer(settings)).rstrip("/")


def discovery(settings: Settings) -> dict[str, Any]:
    """/.well-known/openid-configuration: the browser goes to the issuer, apps call the provider URL."""
    base, server = issuer(settings), provider_url(settings)
    return {
        "issuer": base,
        "authorization_endpoint": base + AUTHORIZE_PATH,
        "token_endpoint": server + TOKEN_PATH,
        "userinfo_endpoint": server + USERINFO_PATH,
        "jwks_uri": server + JWKS_PATH,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "scopes_supported": list(rules.SCOPES),
        "claims_supported": ["sub", "name", "preferred_username", "profile", "picture", "website", "email",
                             "email_verified", "isPro", "orgs", "iss", "aud", "exp", "iat", "nonce", "auth_time"],
    }


# ---- clients ------------------------------------------------------------------------------------------


def client_of(session: Session, space: Space) -> OAuthClient | None:
    return session.scalar(select(OAuthClient).where(OAuthClient.space_id == space.id))


def ensure_client(session: Session, platform: Platform, space: Space) -> tuple[OAuthClient, str]:
    """The space's client and its secret in clear (created the first time)."""
    client = client_of(session, space)
    if client is None:
        secret = secrets.token_urlsafe(32)
        client = OAuthClient(space_id=space.id, client_id=secrets.token_hex(16),
                             secret_ciphertext=platform.cipher.encrypt(secret))
        session.add(client)
        session.flush()
        return client, secret
    return client, platform.cipher.decrypt(client.secret_ciphertext)


def client_secret(session: Session, platform: Platform, space: Space) -> str | None:
    """The space's client secret in clear, if it has a client (for the log masker; never creates one)."""
    client = client_of(session, space)
    return None if client is None else platform.cipher.decrypt(client.secret_ciphertext)


def oauth_env(session: Session, platform: Platform, space: Space) -> dict[str, str]:
    """OAUTH_* and OPENID_PROVIDER_URL for a space whose README sets hf_oauth: true (else nothing)."""
    config = rules.config_from_card(space.card_data)
    if config is None:
        return {}
    client, secret = ensure_client(session, platform, space)
    return {"OAUTH_CLIENT_ID": client.client_id, "OAUTH_CLIENT_SECRET": secret, "OAUTH_SCOPES": config.scope_text,
            "OPENID_PROVIDER_URL": provider_url(platform.settings)}


def _client_config(session: Session, client_id: str) -> tuple[OAuthClient, OAuthConfig]:
    client = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id)) if client_id else None
    config = rules.config_from_card(client.space.card_data) if client is not None else None
    if client is None or config is None:
        raise OAuthProblem("invalid_client", "Unknown client_id: no space with sign-in (hf_oauth: true) has it.", 401)
    return client, config


# ---- authorize ----------------------------------------------------------------------------------------


def check_authorize(session: Session, platform: Platform, request: AuthorizeRequest) -> Grant:
    """Validate an authorize request; errors are shown to the visitor, never sent to the redirect URI."""
    client, config = _client_config(session, request.client_id)
    redirect_to = rules.browser_redirect(request.redirect_uri, app_host(platform.settings, client.space))
    if request.response_type != "code":
        raise OAuthProblem("unsupported_response_type", "Only response_type=code (authorization code flow) is supported.")
    method = rules.check_challenge_method(request.code_challenge, request.code_challenge_method)
    scopes = rules.requested_scopes(request.scope, config)
    return Grant(client, client.space, config, scopes, redirect_to, method)


def refusal_for(session: Session, grant: Grant, user: Account) -> str | None:
    """Why this user may not sign in to the space (hf_oauth_authorized_org), or None."""
    if not grant.config.authorized_orgs:
        return None
    for name in grant.config.authorized_orgs:
        org = accounts.get_account(session, name)
        if org is not None and org.kind == "org" and accounts.is_member(session, user, org):
            return None
    names = ", ".join(grant.config.authorized_orgs)
    return (f"{grant.space.space_id} only lets members of {names} sign in, and {user.name} is not one. "
            f"Ask an admin of {names} to add you, or sign in as a member.")


def issue_code(session: Session, grant: Grant, request: AuthorizeRequest, user: Account) -> str:
    code = secrets.token_urlsafe(32)
    session.add(OAuthCode(
        code_hash=hash_token(code), client_pk=grant.client.id, user_id=user.id, redirect_uri=request.redirect_uri,
        scope=" ".join(grant.scopes), nonce=request.nonce, code_challenge=request.code_challenge,
        code_challenge_method=grant.challenge_method,
        expires_at=utcnow() + timedelta(seconds=rules.CODE_LIFETIME_SECONDS)))
    session.flush()
    return code


# ---- token --------------------------------------------------------------------------------------------


def authenticate_client(session: Session, platform: Platform, client_id: str, secret: str) -> OAuthClient:
    client, _ = _client_config(session, client_id)
    expected = platform.cipher.decrypt(client.secret_ciphertext)
    if not hmac.compare_digest(expected.encode(), secret.encode()):
        raise OAuthProblem("invalid_client", "Wrong client_secret for this client_id.", 401)
    return client


def _take_code(session: Session, client: OAuthClient, code: str, redirect_uri: str) -> OAuthCode:
    row = session.scalar(select(OAuthCode).where(OAuthCode.code_hash == hash_token(code))) if code else None
    if row is None or row.client_pk != client.id:
        raise OAuthProblem("invalid_grant", "Unknown authorization code, or one issued to another client.")
    if row.used:  # RFC 6749 4.1.2: a reused code revokes what it gave
        for token in session.scalars(select(OAuthAccessToken).where(OAuthAccessToken.code_pk == row.id)):
            token.revoked = True
        raise OAuthProblem("invalid_grant", "This authorization code was already used; sign in again.")
    if row.expires_at <= utcnow():
        raise OAuthProblem("invalid_grant", "This authorization code has expired; sign in again.")
    if row.redirect_uri != redirect_uri:
        raise OAuthProblem("invalid_grant", "redirect_uri differs from the one the code was issued for.")
    row.used = True
    return row


def exchange_code(session: Session, platform: Platform, client: OAuthClient, code: str, redirect_uri: str,
                  verifier: str | None) -> dict[str, Any]:
    """grant_type=authorization_code -> access token (+ ID token with openid)."""
    row = _take_code(session, client, code, redirect_uri)
    rules.check_pkce(row.code_challenge, row.code_challenge_method, verifier)
    config = rules.config_from_card(client.space.card_data)
    assert config is not None  # _client_config checked it
    user = session.get(Account, row.user_id)
    assert user is not None  # cascades with the account
    token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
    lifetime = config.expiration_minutes * 60
    session.add(OAuthAccessToken(token_hash=hash_token(token), client_pk=client.id, code_pk=row.id, user_id=user.id,
                                 scope=row.scope, expires_at=utcnow() + timedelta(seconds=lifetime)))
    answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime, "scope": row.scope}
    if "openid" in row.scope.split():
        claims = {**user_claims(session, platform.settings, user, tuple(row.scope.split())),
                  "aud": client.client_id, "iss": issuer(platform.settings)}
        if row.nonce:
            claims["nonce"] = row.nonce
        answer["id_token"] = sign_id_token(session, platform, claims, lifetime)
    session.flush()
    return answer


# ---- identity -----------------------------------------------------------------------------------------


def user_claims(session: Session, settings: Settings, user: Account, scopes: tuple[str, ...]) -> dict[str, Any]:
    """What userinfo (and the ID token) say about the user, per scope: the fields gradio's OAuthProfile reads."""
    claims: dict[str, Any] = {"sub": str(user.id)}
    if "profile" in scopes:
        base = issuer(settings)
        claims.update(name=user.fullname or user.name, preferred_username=user.name, profile=f"{base}/{user.name}",
                      picture=f"{base}/oauth/avatars/{user.name}.svg", website="", isPro=False,
                      orgs=[{"sub": str(o.id), "name": o.fullname or o.name, "preferred_username": o.name}
                            for o in accounts.orgs_of(session, user)])
    if "email" in scopes and user.email:
        claims.update(email=user.email, email_verified=False)
    return claims


def access_token_row(session: Session, token: str) -> OAuthAccessToken:
    row = session.scalar(select(OAuthAccessToken).where(OAuthAccessToken.token_hash == hash_token(token)))
    if row is None or row.revoked:
        raise OAuthProblem("invalid_token", "Invalid or revoked access token.", 401)
    if row.expires_at <= utcnow():
        raise OAuthProblem("invalid_token", "This access token has expired; sign in to the app again.", 401)
    return row


def userinfo(session: Session, settings: Settings, token: str) -> dict[str, Any]:
    row = access_token_row(session, token)
    return user_claims(session, settings, row.user, tuple(row.scope.split()))


def authenticate_access_token(session: Session, token: str) -> Principal:
    """An app's OAuth access token as a platform principal: read-only unless write-repos/manage-repos."""
    try:
        row = access_token_row(session, token)
    except OAuthProblem as problem:
        raise Unauthorized(problem.description) from None
    return Principal(user=row.user, scope=rules.token_scope(tuple(row.scope.split())), token_name="oauth")


# ---- signing key --------------------------------------------------------------------------------------


def signing_key(session: Session, platform: Platform) -> RSAKey:
    """The provider's RS256 key, made once and kept encrypted with the platform key."""
    row = session.get(PlatformSetting, SIGNING_KEY_SETTING)
    if row is None:
        key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
        row = PlatformSetting(key=SIGNING_KEY_SETTING, value={"pem": platform.cipher.encrypt(key.as_pem(private=True).decode())})
        session.add(row)
        session.flush()
        return key
    key = RSAKey.import_key(platform.cipher.decrypt(row.value["pem"]), {"use": "sig", "alg": "RS256"})
    key.ensure_kid()  # the RFC 7638 thumbprint, as at creation
    return key


def jwks(session: Session, platform: Platform) -> dict[str, Any]:
    key = signing_key(session, platform)
    return {"keys": [key.as_dict(private=False)]}


def sign_id_token(session: Session, platform: Platform, claims: dict[str, Any], lifetime: int) -> str:
    key = signing_key(session, platform)
    now = int(time.time())
    payload = {**claims, "iat": now, "auth_time": now, "exp": now + lifetime}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, payload, key)
