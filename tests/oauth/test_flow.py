"""Sign-in for apps against a live server with httpx: discovery, consent, code, token, userinfo,
whoami with the access token, and the attacker's side (redirects elsewhere, other clients, code reuse,
wrong secrets, CSRF, users outside the authorized org)."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from joserfc import jwt
from joserfc.jwk import KeySet

from controller.domain.oauth import s256
from controller.runtimes import netns
from tests.oauth.conftest import Site, csrf_of, make_site
from tests.support.gitrepo import remote
from tests.support.server import make_server
from tests.support.spaces import wait_stage

STATIC = {"index.html": "<h1>hi</h1>\n"}


def readme(extra: str = "") -> str:
    return f"---\ntitle: Sign in\nsdk: static\nhf_oauth: true\n{extra}---\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("oauth")
    server = make_server(tmp)
    for site in make_site(server):
        spaces = {"signin": readme("hf_oauth_expiration_minutes: 60\n"), "other": readme(),
                  "orgonly": readme("hf_oauth_authorized_org: acme\nhf_oauth_scopes: [admin]\n"),
                  "reader": readme("hf_oauth_scopes: [read-repos]\n"),
                  "plain": "---\nsdk: static\n---\n"}
        for name, card in spaces.items():
            site.push("alice", name, {**STATIC, "README.md": card}, tmp)
        for name in spaces:
            wait_stage(server, f"alice/{name}", {"RUNNING"})
        yield site


def authorize_params(site: Site, space: str, **extra: str) -> dict[str, str]:
    client_id, _ = site.credentials(space)
    owner, _, name = space.partition("/")
    params = {"client_id": client_id, "redirect_uri": f"{site.app_origin(owner, name)}/login/callback?_target_url=%2F",
              "response_type": "code", "scope": "openid profile", "state": "st-1", "nonce": "nonce-1"}
    return {**params, **extra}


def consent(client: httpx.Client, params: dict[str, str], decision: str = "allow") -> httpx.Response:
    page = client.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text[:800]
    return client.post("/oauth/authorize", data={**params, "decision": decision, "csrf": csrf_of(page.text)})


def code_from(response: httpx.Response, params: dict[str, str]) -> str:
    assert response.status_code == 303, response.text[:800]
    location = response.headers["location"]
    assert location.startswith(params["redirect_uri"].split("?")[0]), location
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [params["state"]] and query["_target_url"] == ["/"]
    return query["code"][0]


def exchange(site: Site, space: str, code: str, redirect_uri: str, **extra: str) -> httpx.Response:
    client_id, secret = site.credentials(space)
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, **extra}
    return httpx.post(f"{site.url}/oauth/token", data=form, headers={"authorization": f"Basic {basic}"}, timeout=30)


def signed_in(site: Site, clients: dict[str, httpx.Client], user: str, space: str = "alice/signin",
              **extra: str) -> dict[str, Any]:
    params = authorize_params(site, space, **extra)
    code = code_from(consent(clients[user], params), params)
    response = exchange(site, space, code, params["redirect_uri"])
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_discovery_and_jwks(site: Site) -> None:
    doc = httpx.get(f"{site.url}/.well-known/openid-configuration", timeout=10).json()
    assert doc["issuer"] == site.url
    assert doc["authorization_endpoint"] == f"{site.url}/oauth/authorize"
    # apps call the provider server to server: as root the platform listener (what a sandboxed app reaches)
    provider = doc["token_endpoint"].removesuffix("/oauth/token")
    assert provider.startswith(f"http://{netns.LISTENER_ADDRESS}:") if os.geteuid() == 0 else provider == site.url
    assert doc["userinfo_endpoint"] == f"{provider}/oauth/userinfo" and doc["jwks_uri"] == f"{provider}/oauth/jwks"
    assert httpx.get(f"{provider}/.well-known/openid-configuration", timeout=10).json() == doc
    if provider != site.url:  # the listener serves the provider's machine endpoints, not the site
        for path in ("/oauth/authorize", "/api/spaces", "/login", "/spaces/alice/signin"):
            assert httpx.get(provider + path, timeout=10).status_code == 404, path
    assert {"openid", "profile", "email", "read-repos", "manage-repos"} <= set(doc["scopes_supported"])
    keys = httpx.get(doc["jwks_uri"], timeout=10).json()["keys"]
    assert keys and all("d" not in key and "p" not in key for key in keys), "only public keys are published"


def test_code_flow_userinfo_and_whoami(site: Site, clients: dict[str, httpx.Client]) -> None:
    answer = signed_in(site, clients, "bob")
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600 and answer["scope"] == "openid profile"
    client_id, _ = site.credentials("alice/signin")
    keys = KeySet.import_key_set(httpx.get(f"{site.url}/oauth/jwks", timeout=10).json())
    claims = jwt.decode(answer["id_token"], keys).claims
    assert claims["iss"] == site.url and claims["aud"] == client_id and claims["nonce"] == "nonce-1"
    assert claims["preferred_username"] == "bob"
    token = answer["access_token"]
    info = httpx.get(f"{site.url}/oauth/userinfo", headers={"authorization": f"Bearer {token}"}, timeout=10).json()
    assert info["preferred_username"] == "bob" and info["name"] == "bob"
    assert {"sub", "profile", "picture"} <= set(info)
    assert httpx.get(info["picture"], timeout=10).headers["content-type"].startswith("image/svg")
    api = HfApi(endpoint=site.url, token=token)
    assert api.whoami()["name"] == "bob"
    with pytest.raises(HfHubHTTPError) as refused:  # openid profile: read-only
        api.create_repo("bob/made-by-app", repo_type="space", space_sdk="static")
    assert refused.value.response.status_code in (401, 403)


def test_gradio_style_https_callback_goes_back_over_the_sites_scheme(site: Site, clients: dict[str, httpx.Client]) -> None:
    origin = site.app_origin("alice", "signin")
    https = origin.replace("http://", "https://", 1) + "/login/callback?_target_url=%2F"
    params = authorize_params(site, "alice/signin", redirect_uri=https)
    response = consent(clients["bob"], params)
    assert response.headers["location"].startswith(f"{origin}/login/callback?")
    code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
    assert exchange(site, "alice/signin", code, https).status_code == 200


def test_pkce_s256(site: Site, clients: dict[str, httpx.Client]) -> None:
    verifier = "x" * 60
    params = authorize_params(site, "alice/signin", code_challenge=s256(verifier), code_challenge_method="S256")
    code = code_from(consent(clients["bob"], params), params)
    missing = exchange(site, "alice/signin", code, params["redirect_uri"])
    assert missing.status_code == 400 and "code_verifier" in missing.json()["error_description"]
    code = code_from(consent(clients["bob"], params), params)
    assert exchange(site, "alice/signin", code, params["redirect_uri"], code_verifier="y" * 60).status_code == 400
    code = code_from(consent(clients["bob"], params), params)
    assert exchange(site, "alice/signin", code, params["redirect_uri"], code_verifier=verifier).status_code == 200


def test_guest_logs_in_first_and_comes_back(site: Site, clients: dict[str, httpx.Client]) -> None:
    params = authorize_params(site, "alice/signin")
    guest = clients["guest"]
    response = guest.get("/oauth/authorize", params=params)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    page = guest.get(response.headers["location"])
    nxt = csrf = None
    nxt = page.text.split('name="next" value="', 1)[1].split('"', 1)[0]
    csrf = csrf_of(page.text)
    done = guest.post("/login", data={"username": "carol", "password": "correct-horse-1", "next": nxt.replace("&amp;", "&"),
                                      "csrf": csrf})
    assert done.status_code == 303 and done.headers["location"].startswith("/oauth/authorize?")
    assert "Sign in to alice/signin" in guest.get(done.headers["location"]).text


def test_deny_sends_access_denied(site: Site, clients: dict[str, httpx.Client]) -> None:
    params = authorize_params(site, "alice/signin")
    response = consent(clients["bob"], params, decision="deny")
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["access_denied"] and "code" not in query


# ---- the attacker's side ------------------------------------------------------------------------------


@pytest.mark.parametrize("redirect_uri", [
    "http://evil.example/login/callback",
    "http://alice-other.localhost:{port}/login/callback",  # another space's host
    "http://alice-signin.localhost.evil.example:{port}/login/callback",
    "http://localhost:{port}/settings/tokens",  # the platform itself
])
def test_redirect_elsewhere_is_refused_on_the_page(site: Site, clients: dict[str, httpx.Client], redirect_uri: str) -> None:
    params = authorize_params(site, "alice/signin", redirect_uri=redirect_uri.format(port=site.server.port))
    page = clients["bob"].get("/oauth/authorize", params=params)
    assert page.status_code == 400 and "own address" in page.text and "location" not in page.headers
    forged = clients["bob"].post("/oauth/authorize", data={**params, "decision": "allow",
                                                           "csrf": csrf_of(clients["bob"].get("/").text)})
    assert forged.status_code == 400 and "code=" not in forged.headers.get("location", "")


def test_another_spaces_client_cannot_get_codes_for_this_space(site: Site, clients: dict[str, httpx.Client]) -> None:
    other_id, _ = site.credentials("alice/other")
    params = authorize_params(site, "alice/signin", client_id=other_id)  # signin's redirect, other's client
    page = clients["bob"].get("/oauth/authorize", params=params)
    assert page.status_code == 400 and "own address" in page.text


def test_code_reuse_wrong_client_and_wrong_secret(site: Site, clients: dict[str, httpx.Client]) -> None:
    params = authorize_params(site, "alice/signin")
    code = code_from(consent(clients["bob"], params), params)
    stolen = exchange(site, "alice/other", code, params["redirect_uri"])  # another client trying signin's code
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    first = exchange(site, "alice/signin", code, params["redirect_uri"])
    assert first.status_code == 200
    token = first.json()["access_token"]
    again = exchange(site, "alice/signin", code, params["redirect_uri"])
    assert again.status_code == 400 and "already used" in again.json()["error_description"]
    info = httpx.get(f"{site.url}/oauth/userinfo", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert info.status_code == 401, "a reused code revokes the token it gave"
    client_id, _ = site.credentials("alice/signin")
    bad = httpx.post(f"{site.url}/oauth/token", timeout=10, data={
        "grant_type": "authorization_code", "code": "x", "redirect_uri": params["redirect_uri"],
        "client_id": client_id, "client_secret": "guess"})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


def test_consent_needs_csrf(site: Site, clients: dict[str, httpx.Client]) -> None:
    params = authorize_params(site, "alice/signin")
    response = clients["bob"].post("/oauth/authorize", data={**params, "decision": "allow", "csrf": "forged"})
    assert response.status_code == 403 and "location" not in response.headers


def test_scope_beyond_the_readme_is_refused(site: Site, clients: dict[str, httpx.Client]) -> None:
    params = authorize_params(site, "alice/signin", scope="openid profile manage-repos")
    page = clients["bob"].get("/oauth/authorize", params=params)
    assert page.status_code == 400 and "hf_oauth_scopes" in page.text


def test_user_outside_the_authorized_org_is_refused(site: Site, clients: dict[str, httpx.Client]) -> None:
    params = authorize_params(site, "alice/orgonly")
    page = clients["bob"].get("/oauth/authorize", params=params)
    assert page.status_code == 403 and "only lets members of acme" in page.text
    forged = clients["bob"].post("/oauth/authorize", data={**params, "decision": "allow", "csrf": csrf_of(page.text)})
    assert forged.status_code == 403 and "location" not in forged.headers
    assert signed_in(site, clients, "alice", "alice/orgonly")["access_token"]


def test_the_owner_is_told_which_readme_values_were_ignored(site: Site, clients: dict[str, httpx.Client]) -> None:
    params = authorize_params(site, "alice/orgonly")
    owner_page = clients["alice"].get("/oauth/authorize", params=params).text
    assert "unknown scope &#39;admin&#39;" in owner_page and "fix them in README.md" in owner_page
    params = authorize_params(site, "alice/signin")
    assert "fix them in README.md" not in clients["alice"].get("/oauth/authorize", params=params).text


def test_no_client_without_hf_oauth_and_no_secret_in_the_api(site: Site) -> None:
    params = {"client_id": "nope", "redirect_uri": f"{site.app_origin('alice', 'plain')}/login/callback",
              "response_type": "code"}
    page = httpx.get(f"{site.url}/oauth/authorize?{urlencode(params)}", timeout=10)
    assert page.status_code == 400 and "Unknown client_id" in page.text
    _, secret = site.credentials("alice/signin")
    for path in ("/api/spaces/alice/signin", "/api/spaces/alice/signin/runtime", "/api/spaces/alice/signin/variables",
                 "/spaces/alice/signin", "/spaces/alice/signin/settings"):
        body = httpx.get(f"{site.url}{path}", headers={"authorization": f"Bearer {site.tokens['alice']}"}, timeout=10).text
        assert secret not in body, path


def test_a_duplicate_gets_its_own_client(site: Site) -> None:
    api = HfApi(endpoint=site.url, token=site.tokens["bob"])
    api.duplicate_repo("alice/signin", "bob/signin-copy", repo_type="space")
    wait_stage(site.server, "bob/signin-copy", {"RUNNING"})
    source, copy = site.credentials("alice/signin"), site.credentials("bob/signin-copy")
    assert copy[0] != source[0] and copy[1] != source[1]


def test_a_private_spaces_app_only_signs_in_its_readers(site: Site, clients: dict[str, httpx.Client]) -> None:
    settings = clients["alice"].get("/spaces/alice/other/settings")
    made = clients["alice"].post("/spaces/alice/other/settings/visibility",
                                 data={"visibility": "private", "csrf": csrf_of(settings.text)})
    assert made.status_code in (200, 303) and httpx.get(f"{site.url}/api/spaces/alice/other", timeout=10).status_code == 404
    params = authorize_params(site, "alice/other")
    page = clients["carol"].get("/oauth/authorize", params=params)
    assert page.status_code == 404 and "code=" not in page.headers.get("location", "")
    assert clients["alice"].get("/oauth/authorize", params=params).status_code == 200


def test_a_sign_in_token_reads_its_users_private_spaces_only_with_read_repos(site: Site, clients: dict[str, httpx.Client],
                                                                            tmp_path: Path) -> None:
    """The attacker is an app's owner: alice's app gets bob's token when bob signs in. With the default
    `openid profile` it learns who bob is and nothing of his private spaces (API, listing, git); only an app
    whose README asks for read-repos, which bob is shown on the consent page, may read them."""
    HfApi(endpoint=site.url, token=site.tokens["bob"]).create_repo("bob/diary", repo_type="space", space_sdk="static",
                                                                   private=True)
    identity = HfApi(endpoint=site.url, token=signed_in(site, clients, "bob")["access_token"])
    assert identity.whoami()["name"] == "bob"
    with pytest.raises(HfHubHTTPError) as hidden:
        identity.space_info("bob/diary")
    assert hidden.value.response.status_code in (401, 404)
    assert "bob/diary" not in [s.id for s in identity.list_spaces(author="bob")]
    clone = subprocess.run(["git", "clone", "-q", remote(site.url, "bob", "diary", "bob", identity.token or ""),
                            str(tmp_path / "diary")], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    assert clone.returncode != 0 and not (tmp_path / "diary").exists(), clone.stderr
    page = clients["bob"].get("/oauth/authorize", params=authorize_params(site, "alice/reader",
                                                                           scope="openid profile read-repos"))
    assert "Read your spaces, including private ones" in page.text  # what bob is asked to allow
    reader = signed_in(site, clients, "bob", space="alice/reader", scope="openid profile read-repos")
    assert reader["scope"] == "openid profile read-repos"
    api = HfApi(endpoint=site.url, token=reader["access_token"])
    assert api.space_info("bob/diary").id == "bob/diary"
    with pytest.raises(HfHubHTTPError) as refused:  # reading is all it may do
        api.create_repo("bob/made-by-reader", repo_type="space", space_sdk="static")
    assert refused.value.response.status_code in (401, 403)


def test_unknown_token_is_refused(site: Site) -> None:
    response = httpx.get(f"{site.url}/api/whoami-v2", headers={"authorization": "Bearer sp_oauth_nope"}, timeout=10)
    assert response.status_code == 401


