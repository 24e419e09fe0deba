"""The pure rules of sign-in for apps: README settings, scopes, redirect URIs, PKCE."""

from __future__ import annotations

import pytest

from controller.domain import oauth as rules
from controller.domain.oauth import OAuthProblem

ORIGIN = "http://alice-app.localhost:8000"


def test_no_hf_oauth_no_config() -> None:
    assert rules.config_from_card({}) is None
    assert rules.config_from_card({"hf_oauth": "yes"}) is None
    assert rules.config_from_card(None) is None


def test_defaults_and_extra_scopes() -> None:
    config = rules.config_from_card({"hf_oauth": True})
    assert config is not None and config.scope_text == "openid profile"
    assert config.expiration_minutes == 480 and config.authorized_orgs == ()
    config = rules.config_from_card({"hf_oauth": True, "hf_oauth_scopes": ["email", "read-repos", "profile"],
                                     "hf_oauth_authorized_org": "acme", "hf_oauth_expiration_minutes": 60})
    assert config is not None and config.scopes == ("openid", "profile", "email", "read-repos")
    assert config.authorized_orgs == ("acme",) and config.expiration_minutes == 60


def test_bad_readme_values_are_ignored_with_a_reason() -> None:
    config = rules.config_from_card({"hf_oauth": True, "hf_oauth_scopes": ["admin"],
                                     "hf_oauth_expiration_minutes": 10**9})
    assert config is not None and config.scopes == rules.DEFAULT_SCOPES
    assert config.expiration_minutes == rules.MAX_EXPIRATION_MINUTES
    assert any("unknown scope 'admin'" in why for why in config.ignored)
    config = rules.config_from_card({"hf_oauth": True, "hf_oauth_expiration_minutes": "forever"})
    assert config is not None and config.expiration_minutes == 480 and config.ignored


def test_scope_requests_are_a_subset_and_only_write_scopes_write() -> None:
    config = rules.config_from_card({"hf_oauth": True})
    assert config is not None
    assert rules.requested_scopes(None, config) == ("openid", "profile")
    assert rules.requested_scopes("openid", config) == ("openid",)
    with pytest.raises(OAuthProblem, match="hf_oauth_scopes"):
        rules.requested_scopes("openid profile manage-repos", config)
    assert rules.token_scope(("openid", "profile", "read-repos")) == "read"
    assert rules.token_scope(("openid", "profile", "email", "inference-api")) == "identity"
    assert rules.token_scope(("openid", "write-repos")) == "write"


def test_redirect_uri_only_on_the_space_host() -> None:
    assert rules.browser_redirect(f"{ORIGIN}/login/callback?_target_url=%2F", ORIGIN) == \
        f"{ORIGIN}/login/callback?_target_url=%2F"
    # gradio always builds https://SPACE_HOST/login/callback: the browser goes to the site's own scheme
    assert rules.browser_redirect("https://alice-app.localhost:8000/login/callback", ORIGIN) == \
        f"{ORIGIN}/login/callback"
    assert rules.browser_redirect("https://a-b.example.org/cb", "https://a-b.example.org") == "https://a-b.example.org/cb"


@pytest.mark.parametrize("uri", [
    "http://evil.example/login/callback",
    "http://alice-app.localhost.evil.example:8000/login/callback",
    "http://bob-app.localhost:8000/login/callback",  # another space's host
    "http://alice-app.localhost:9999/login/callback",  # another port
    "http://alice-app.localhost/login/callback",
    "http://evil@alice-app.localhost:8000/login/callback",
    "javascript:alert(1)",
    "/login/callback",
    "http://alice-app.localhost:8000/login/callback#frag",
    "http://alice-app.localhost:notaport/x",
])
def test_redirect_uri_elsewhere_is_refused(uri: str) -> None:
    with pytest.raises(OAuthProblem, match=r"own address|not a valid URL"):
        rules.browser_redirect(uri, ORIGIN)


def test_https_site_never_accepts_http() -> None:
    with pytest.raises(OAuthProblem):
        rules.browser_redirect("http://a-b.example.org/cb", "https://a-b.example.org")


def test_pkce() -> None:
    verifier = "v" * 50
    challenge = rules.s256(verifier)
    assert rules.check_challenge_method(challenge, "S256") == "S256"
    assert rules.check_challenge_method(challenge, None) == "plain"
    rules.check_pkce(challenge, "S256", verifier)
    rules.check_pkce(verifier, "plain", verifier)
    rules.check_pkce(None, None, None)
    for bad in (None, "w" * 50):
        with pytest.raises(OAuthProblem, match=r"code_verifier|PKCE"):
            rules.check_pkce(challenge, "S256", bad)
    with pytest.raises(OAuthProblem):
        rules.check_challenge_method("short", "S256")
    with pytest.raises(OAuthProblem):
        rules.check_challenge_method(challenge, "MD5")
