"""Issue 18.3: app content never runs as the visitor on the platform's origin; private apps on their own
host sign visitors in through the platform. Real server, real static spaces, real Chromium.

The hostile space is what an ordinary account can push: an index.html whose script fetches
`/settings/tokens` (relative, and on the platform's origin), takes the CSRF field, posts a new write
token and reports what it got; it also tries to overwrite `spaceport_session` through document.cookie.
A logged-in admin visits it by its path URL and by its host URL, on a site in the default mode
("redirect": path URLs go to the host URL) and on one with SPACEPORT_PATH_APPS=sandboxed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.support.browser import CHROMIUM_ARGS
from tests.support.gitrepo import make_repo, push, remote
from tests.support.server import LiveServer, make_server
from tests.support.spaces import wait_stage

# The module's fixture starts a server and deploys three spaces: a bound for a loaded 2-core machine.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]
PASSWORD = "correct-horse-1"
README = "---\nsdk: static\nstartup_duration_timeout: 5m\n---\n"
HOSTILE_JS = r"""
(async function () {
  const report = {href: location.href, origin: String(self.origin), stolen: [], read: [], errors: []};
  function cookies(label) {
    try { report[label] = document.cookie; } catch (e) { report[label] = "blocked: " + e.name; }
  }
  cookies("cookieBefore");
  for (const c of ["spaceport_session=forged; path=/", "spaceport_session=forged; path=/; domain=localhost"]) {
    try { document.cookie = c; } catch (e) { report.errors.push("cookie write: " + e.name); }
  }
  cookies("cookieAfter");
  const host = location.hostname.endsWith(".localhost") ? "localhost" : location.hostname;
  const platform = location.protocol + "//" + host + (location.port ? ":" + location.port : "");
  for (const url of ["/settings/tokens", platform + "/settings/tokens"]) {
    try {
      const page = await (await fetch(url, {credentials: "include"})).text();
      const csrf = page.match(/name="csrf" value="([^"]+)"/);
      if (!csrf) { report.errors.push(url + ": no csrf"); continue; }
      report.read.push(url);
      const body = new URLSearchParams({name: "stolen", scope: "write", csrf: csrf[1]});
      const made = await (await fetch(url, {method: "POST", body: body, credentials: "include"})).text();
      const token = made.match(/id="new-token"[^>]*value="([^"]+)"/);
      if (token) report.stolen.push(token[1]);
    } catch (e) { report.errors.push(url + ": " + e.name); }
  }
  document.getElementById("out").textContent = JSON.stringify(report);
  fetch("./report?" + encodeURIComponent(JSON.stringify(report))).catch(function () {});  // to its own log
  document.getElementById("done").textContent = "done";
})();
"""
HOSTILE_HTML = f"""<!doctype html><html><head><meta charset="utf-8"><title>hostile</title></head>
<body><h1>Totally harmless app</h1><pre id="out"></pre><p id="done"></p><script>{HOSTILE_JS}</script></body></html>"""


def static_space(title: str) -> dict[str, str]:
    return {"README.md": README, "index.html": f"<!doctype html><html><body><h1>{title}</h1></body></html>"}


class Site:
    def __init__(self, server: LiveServer, tokens: dict[str, str]) -> None:
        self.server, self.tokens = server, tokens

    @property
    def url(self) -> str:
        return self.server.url

    def host_url(self, slug: str, path: str = "/") -> str:
        return f"http://{slug}.localhost:{self.server.port}{path}"

    def deploy(self, name: str, files: dict[str, str], workdir: Path, private: bool = False) -> None:
        body = {"type": "space", "name": name, "organization": "alice", "sdk": "static", "private": private}
        created = httpx.post(f"{self.url}/api/repos/create", json=body, timeout=30,
                             headers={"authorization": f"Bearer {self.tokens['alice']}"})
        assert created.status_code == 200, created.text
        push(make_repo(workdir / "repo", files), remote(self.url, "alice", name, "alice", self.tokens["alice"]))
        stage = wait_stage(self.server, f"alice/{name}", {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR"},
                           token=self.tokens["alice"], timeout=600)["stage"]
        assert stage == "RUNNING"

    def token_rows(self) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.server.data_dir / 'spaceport.db'}?mode=ro", uri=True)
        try:
            return sorted(conn.execute("SELECT id, user_id, name FROM tokens").fetchall())
        finally:
            conn.close()


def start_site(tmp: Path, **env: str) -> tuple[LiveServer, dict[str, str]]:
    server = make_server(tmp, **env).start(timeout=300)  # a bound on a loaded machine
    tokens = {name: server.create_user(name, admin=name == "root", password=PASSWORD) for name in ("alice", "bob", "root")}
    return server, tokens


@pytest.fixture(scope="module", params=["redirect", "sandboxed"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    mode: str = request.param
    server, tokens = start_site(tmp_path_factory.mktemp(f"isolation-{mode}"), SPACEPORT_PATH_APPS=mode)
    site = Site(server, tokens)
    try:
        site.deploy("hostile", {"README.md": README, "index.html": HOSTILE_HTML}, tmp_path_factory.mktemp("hostile"))
        if mode == "redirect":
            for name in ("vault-a", "vault-b"):
                site.deploy(name, static_space(f"{name} contents"), tmp_path_factory.mktemp(name), private=True)
        yield site
    finally:
        server.close()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def logged_in(browser: Browser, contexts: list[BrowserContext], site: Site, user: str | None) -> Page:
    context = browser.new_context()
    contexts.append(context)
    page = context.new_page()
    if user is not None:
        page.goto(f"{site.url}/login")
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("link", name=user, exact=True)).to_be_visible()
    return page


def platform_cookies(context: BrowserContext) -> list[dict[str, Any]]:
    """The cookies the browser sends to the platform (host-only on `localhost`, or set for it)."""
    return sorted((c for c in context.cookies() if c["domain"].lstrip(".") == "localhost"), key=lambda c: c["name"])


def visit_hostile(page: Page, url: str) -> dict[str, Any]:
    page.goto(url)
    expect(page.locator("#done")).to_have_text("done", timeout=60_000)
    report: dict[str, Any] = json.loads(page.locator("#out").text_content() or "{}")
    return report


@pytest.mark.parametrize("style", ["path", "host"])
def test_hostile_app_cannot_act_as_the_visiting_admin(site: Site, browser: Browser, contexts: list[BrowserContext],
                                                      style: str) -> None:
    admin = logged_in(browser, contexts, site, "root")
    before_cookies, before_tokens = platform_cookies(admin.context), site.token_rows()
    assert [c["name"] for c in before_cookies].count("spaceport_session") == 1
    url = f"{site.url}/apps/alice/hostile/" if style == "path" else site.host_url("alice-hostile")
    report = visit_hostile(admin, url)

    assert report["stolen"] == [] and report["read"] == [], report  # read no platform page, made no token
    assert site.token_rows() == before_tokens
    assert "spaceport" not in (report["cookieBefore"] + report["cookieAfter"]).replace("spaceport_session=forged", "")
    mode = site.server.env["SPACEPORT_PATH_APPS"]
    if style == "host" or mode == "redirect":
        assert report["origin"] == f"http://alice-hostile.localhost:{site.server.port}"  # its own origin
    else:
        assert report["origin"] == "null" and report["href"].startswith(f"{site.url}/apps/alice/hostile/")
    assert platform_cookies(admin.context) == before_cookies  # the platform's session cookie is untouched
    elsewhere = [c for c in admin.context.cookies() if c not in before_cookies]
    assert all(c["domain"] == "alice-hostile.localhost" for c in elsewhere), elsewhere  # its own host at most
    admin.goto(f"{site.url}/settings/tokens")
    expect(admin.get_by_role("link", name="root", exact=True)).to_be_visible()  # still signed in as before


# ---- private spaces on their host URL: the sign-in bridge ---------------------------------------------
def redirect_only(site: Site) -> None:
    if site.server.env["SPACEPORT_PATH_APPS"] != "redirect":
        pytest.skip("the bridge does not depend on the path mode: checked once, on the default site")


def test_signed_in_reader_reaches_a_private_app_through_the_bridge(site: Site, browser: Browser,
                                                                  contexts: list[BrowserContext]) -> None:
    redirect_only(site)
    alice = logged_in(browser, contexts, site, "alice")
    alice.goto(site.host_url("alice-vault-a", "/index.html?x=1"))
    expect(alice.get_by_role("heading", name="vault-a contents")).to_be_visible()
    assert alice.url == site.host_url("alice-vault-a", "/index.html?x=1")  # back where the visit started
    app_cookies = [c for c in alice.context.cookies() if c["name"] == "spaceport_app_session"]
    assert [(c["domain"], c["httpOnly"], c["sameSite"]) for c in app_cookies] == [
        ("alice-vault-a.localhost", True, "Lax")
    ]
    assert "spaceport" not in alice.evaluate("document.cookie")

    alice.goto(f"{site.url}/spaces/alice/vault-a")  # the space page embeds it (cross-site iframe)
    frame = alice.frame_locator("#app-frame")
    expect(frame.get_by_role("heading", name="vault-a contents")).to_be_visible(timeout=30_000)
    open_link = alice.get_by_role("link", name=re.compile("Open app in a new tab"))
    expect(open_link).to_have_attribute("href", site.host_url("alice-vault-a"))


@pytest.mark.parametrize("user", [None, "bob"])
def test_others_never_reach_a_private_app(site: Site, browser: Browser, contexts: list[BrowserContext],
                                          user: str | None) -> None:
    redirect_only(site)
    page = logged_in(browser, contexts, site, user)
    response = page.goto(site.host_url("alice-vault-a"))
    assert response is not None
    if user is None:
        expect(page).to_have_url(re.compile(rf"^{re.escape(site.url)}/login\?next="))  # asked to log in
    else:
        assert response.status == 404
    assert "vault-a contents" not in page.content()
    assert [c for c in page.context.cookies() if c["name"] == "spaceport_app_session"] == []


def test_a_sign_in_for_space_a_does_not_open_space_b(site: Site, browser: Browser,
                                                     contexts: list[BrowserContext]) -> None:
    redirect_only(site)
    alice = logged_in(browser, contexts, site, "alice")
    bridge = alice.context.request.get(f"{site.url}/auth/app?space=alice/vault-a&next=/", max_redirects=0)
    assert bridge.status == 303
    token_url = bridge.headers["location"]
    assert token_url.startswith(site.host_url("alice-vault-a", "/__spaceport__/auth?token="))
    token = token_url.split("token=", 1)[1].split("&", 1)[0]

    bob = logged_in(browser, contexts, site, "bob")  # bob got hold of alice's link for A
    refused = bob.goto(site.host_url("alice-vault-b", f"/__spaceport__/auth?token={token}&next=/"))
    assert refused is not None and refused.status == 403
    assert "vault-b contents" not in bob.content()
    alice.goto(site.host_url("alice-vault-a"))
    expect(alice.get_by_role("heading", name="vault-a contents")).to_be_visible()
    cookie_a = next(c for c in alice.context.cookies() if c["name"] == "spaceport_app_session")
    bob.context.add_cookies([{**cookie_a, "domain": "alice-vault-b.localhost"}])  # A's cookie replayed on B
    response = bob.goto(site.host_url("alice-vault-b"))
    assert response is not None and response.status == 404  # bob: redirected to the bridge, which refuses
    assert "vault-b contents" not in bob.content()
