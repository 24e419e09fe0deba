"""The provider's use cases over a real database (SQLite and PostgreSQL): clients, codes, tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import OAuthAccessToken, OAuthClient, OAuthCode, Space, utcnow
from controller.domain.errors import Unauthorized
from controller.domain.oauth import OAuthProblem
from controller.runtimes import netns
from controller.services import accounts, listener, oauth, spaces
from controller.services.oauth import AuthorizeRequest
from controller.services.platform import Platform
from controller.services.views import app_host

CARD = {"hf_oauth": True, "hf_oauth_expiration_minutes": 30}


def make_space(session: Session, platform: Platform, name: str = "app", card: dict[str, Any] | None = None) -> Space:
    user = accounts.get_account(session, "alice") or accounts.create_user(session, "alice")
    space = spaces.create_space(session, platform.settings.repos_dir, accounts.Principal(user, "write"), "alice", name)
    space.card_data = dict(CARD if card is None else card)
    return space


def authorize(session: Session, platform: Platform, space: Space, user: str = "bob", **extra: str) -> tuple[str, str]:
    client, _ = oauth.ensure_client(session, platform, space)
    redirect = app_host(platform.settings, space) + "/login/callback"
    request = AuthorizeRequest(client_id=client.client_id, redirect_uri=redirect, scope="openid profile",
                               nonce="n-1", **extra)
    grant = oauth.check_authorize(session, platform, request)
    account = accounts.get_account(session, user) or accounts.create_user(session, user)
    return oauth.issue_code(session, grant, request, account), redirect


def test_env_client_and_encrypted_secret(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        space = make_space(session, db_platform)
        plain = make_space(session, db_platform, "plain", card={})
        env = oauth.oauth_env(session, db_platform, space)
        assert oauth.oauth_env(session, db_platform, plain) == {}
        assert env["OAUTH_SCOPES"] == "openid profile"
        own = listener.address(db_platform.settings)  # as root: the platform listener, which sandboxes reach
        assert env["OPENID_PROVIDER_URL"] == (f"http://{own[0]}:{own[1]}" if own else "http://localhost:8000")
        assert netns.listener_port(env) == (own[1] if own else None), "the firewall opens for hf_oauth apps"
        assert netns.listener_port({"OPENID_PROVIDER_URL": "http://169.254.231.2:1/"}) is None
        assert netns.listener_port({"OPENID_PROVIDER_URL": "https://evil.example/"}) is None
        assert oauth.oauth_env(session, db_platform, space) == env, "one client per space, the same secret"
        row = session.scalar(select(OAuthClient).where(OAuthClient.space_id == space.id))
        assert row is not None and env["OAUTH_CLIENT_SECRET"] not in row.secret_ciphertext


def test_the_client_secret_is_masked_in_logs(db_platform: Platform) -> None:
    """The app gets OAUTH_CLIENT_SECRET in clear; an app that prints it shows MASK in its logs (as secrets do)."""
    from controller.services.buildlogs import MASK, secret_masker

    with db_platform.tx() as session:
        space = make_space(session, db_platform)
        secret = oauth.oauth_env(session, db_platform, space)["OAUTH_CLIENT_SECRET"]
        plain = make_space(session, db_platform, "plain", card={})
        masked = secret_masker(session, db_platform, space)(f"my secret is {secret}!")
        assert secret not in masked and masked == f"my secret is {MASK}!"
        assert secret_masker(session, db_platform, plain)(f"x {secret}") == f"x {secret}", "only its own client's"


def test_code_flow_id_token_and_token_principal(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        space = make_space(session, db_platform)
        code, redirect = authorize(session, db_platform, space)
        client, secret = oauth.ensure_client(session, db_platform, space)
        assert oauth.authenticate_client(session, db_platform, client.client_id, secret) is client
        answer = oauth.exchange_code(session, db_platform, client, code, redirect, None)
        assert answer["expires_in"] == 30 * 60 and answer["scope"] == "openid profile"
        keys = KeySet.import_key_set(oauth.jwks(session, db_platform))
        claims = jwt.decode(answer["id_token"], keys).claims
        assert claims["aud"] == client.client_id and claims["nonce"] == "n-1"
        assert claims["preferred_username"] == "bob" and claims["iss"] == "http://localhost:8000"
        principal = accounts.authenticate_token(session, answer["access_token"])
        assert principal.user.name == "bob" and not principal.can_write
        assert oauth.userinfo(session, db_platform.settings, answer["access_token"])["name"] == "bob"


def test_code_reuse_is_refused_and_revokes_its_token(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        space = make_space(session, db_platform)
        code, redirect = authorize(session, db_platform, space)
        client, _ = oauth.ensure_client(session, db_platform, space)
        token = oauth.exchange_code(session, db_platform, client, code, redirect, None)["access_token"]
        with pytest.raises(OAuthProblem, match="already used"):
            oauth.exchange_code(session, db_platform, client, code, redirect, None)
        with pytest.raises(Unauthorized, match="revoked"):
            accounts.authenticate_token(session, token)


def test_other_client_wrong_redirect_and_pkce(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        space, other = make_space(session, db_platform), make_space(session, db_platform, "other")
        code, redirect = authorize(session, db_platform, space)
        other_client, _ = oauth.ensure_client(session, db_platform, other)
        with pytest.raises(OAuthProblem, match="another client"):
            oauth.exchange_code(session, db_platform, other_client, code, redirect, None)
        client, _ = oauth.ensure_client(session, db_platform, space)
        with pytest.raises(OAuthProblem, match="redirect_uri differs"):
            oauth.exchange_code(session, db_platform, client, code, redirect + "x", None)
        verifier = "a" * 64
        code, redirect = authorize(session, db_platform, space, code_challenge=oauth.rules.s256(verifier),
                                   code_challenge_method="S256")
        with pytest.raises(OAuthProblem, match="PKCE"):
            oauth.exchange_code(session, db_platform, client, code, redirect, None)
        code, redirect = authorize(session, db_platform, space, code_challenge=oauth.rules.s256(verifier),
                                   code_challenge_method="S256")
        assert oauth.exchange_code(session, db_platform, client, code, redirect, verifier)["access_token"]
        with pytest.raises(OAuthProblem, match="Wrong client_secret"):
            oauth.authenticate_client(session, db_platform, client.client_id, "guess")


def test_org_restriction(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        space = make_space(session, db_platform, card={"hf_oauth": True, "hf_oauth_authorized_org": ["acme"]})
        member, outsider = accounts.create_user(session, "carol"), accounts.create_user(session, "dave")
        accounts.create_org(session, "acme", ["carol"])
        client, _ = oauth.ensure_client(session, db_platform, space)
        request = AuthorizeRequest(client_id=client.client_id,
                                   redirect_uri=app_host(db_platform.settings, space) + "/login/callback")
        grant = oauth.check_authorize(session, db_platform, request)
        assert oauth.refusal_for(session, grant, member) is None
        refusal = oauth.refusal_for(session, grant, outsider)
        assert refusal is not None and "only lets members of acme" in refusal and "dave" in refusal


def test_each_space_gets_its_own_client(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        first = oauth.oauth_env(session, db_platform, make_space(session, db_platform))
        second = oauth.oauth_env(session, db_platform, make_space(session, db_platform, "copy"))
        assert first["OAUTH_CLIENT_ID"] != second["OAUTH_CLIENT_ID"]
        assert first["OAUTH_CLIENT_SECRET"] != second["OAUTH_CLIENT_SECRET"]


def test_signing_key_survives_a_reload(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        first = oauth.signing_key(session, db_platform)
    with db_platform.tx() as session:
        again = oauth.signing_key(session, db_platform)
        assert again.kid == first.kid and again.is_private
        token = oauth.sign_id_token(session, db_platform, {"sub": "1"}, 60)
        assert jwt.decode(token, KeySet.import_key_set(oauth.jwks(session, db_platform))).claims["sub"] == "1"


def test_expired_codes_and_tokens_are_refused(db_platform: Platform) -> None:
    with db_platform.tx() as session:
        space = make_space(session, db_platform)
        client, _ = oauth.ensure_client(session, db_platform, space)
        code, redirect = authorize(session, db_platform, space)
        token = oauth.exchange_code(session, db_platform, client, code, redirect, None)["access_token"]
        for row in session.scalars(select(OAuthAccessToken)):
            row.expires_at = utcnow() - timedelta(seconds=1)
        with pytest.raises(Unauthorized, match="expired"):
            accounts.authenticate_token(session, token)
        code, redirect = authorize(session, db_platform, space)
        for code_row in session.scalars(select(OAuthCode).where(OAuthCode.used.is_(False))):
            code_row.expires_at = utcnow() - timedelta(seconds=1)
        with pytest.raises(OAuthProblem, match="expired"):
            oauth.exchange_code(session, db_platform, client, code, redirect, None)
