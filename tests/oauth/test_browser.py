"""Sign-in for apps in real Chromium: a real Gradio app with gr.LoginButton and gr.OAuthProfile, deployed
with git push, signs a Spaceport user in and shows their name; the token it received works for whoami;
a user outside hf_oauth_authorized_org is refused.

The app runs in the site's default sandbox (as root here: bubblewrap and its own network namespace, whose
egress is public addresses only): it calls the token, userinfo and whoami endpoints server to server at
OPENID_PROVIDER_URL, the platform listener (169.254.231.1, opened for hf_oauth instances only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.oauth.conftest import PASSWORD, Site, make_site
from tests.support.browser import CHROMIUM_ARGS, until_shown, watch
from tests.support.server import make_server
from tests.support.spaces import wait_stage

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
README = """---
title: Sign in with Spaceport
sdk: gradio
app_file: app.py
hf_oauth: true
hf_oauth_authorized_org: acme
hf_oauth_expiration_minutes: 60
---
"""
APP = '''import os

import gradio as gr
from huggingface_hub import HfApi


def hello(profile: gr.OAuthProfile | None) -> str:
    return "Not signed in" if profile is None else f"Hello {profile.name} ({profile.username})"


def whoami(token: gr.OAuthToken | None) -> str:
    if token is None:
        return "No token"
    me = HfApi(endpoint=os.environ["OPENID_PROVIDER_URL"], token=token.token).whoami()
    return f"whoami says {me['name']}, scope {token.scope}"


with gr.Blocks() as demo:
    gr.LoginButton()
    greeting = gr.Markdown()
    who = gr.Markdown()
    demo.load(hello, None, greeting)
    demo.load(whoami, None, who)

demo.launch()
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("oauth-browser")
    server = make_server(tmp)
    for site in make_site(server):
        site.push("alice", "signin", {"README.md": README, "app.py": APP}, tmp)
        wait_stage(server, "alice/signin", {"RUNNING"}, timeout=600)
        yield site


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def fresh_page(browser: Browser) -> Page:
    return browser.new_context(viewport={"width": 1280, "height": 900}).new_page()


def sign_in_from_the_app(page: Page, site: Site, user: str) -> list[str]:
    """Open the app, press its Sign in button and log in; returns what the page loads from then on."""
    seen = watch(page)
    url = site.app_origin("alice", "signin") + "/"
    page.goto(url)
    try:
        until_shown(page, lambda ms: expect(page.get_by_text("Not signed in")).to_be_visible(timeout=ms), seen, 120,
                    reload=lambda: page.goto(url))
    except AssertionError:
        shot(page, "oauth-debug-app-not-loaded")
        raise AssertionError("the app did not render; what the page did:\n" + "\n".join(seen)) from None
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(site.url)}/login\?next="), timeout=30_000)
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    return seen


def expect_text(page: Page, text: str, seen: list[str], timeout: float = 60_000) -> None:
    """Wait for `text`; if it never shows, say where the page is, what it shows and what it loaded."""
    try:
        until_shown(page, lambda ms: expect(page.get_by_text(text)).to_be_visible(timeout=ms), seen, timeout / 1000,
                    reload=page.reload)
    except AssertionError:
        shot(page, "oauth-debug-missing-text")
        body = page.locator("body").inner_text()[:800]
        raise AssertionError(f"{text!r} never showed at {page.url}; the page shows:\n{body}\n"
                             "what it loaded:\n" + "\n".join(seen[-60:])) from None


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_member_signs_in_and_the_app_sees_their_name_and_token(site: Site, browser: Browser) -> None:
    page = fresh_page(browser)
    try:
        seen = sign_in_from_the_app(page, site, "alice")
        expect(page.get_by_role("heading", name="Sign in to alice/signin")).to_be_visible()
        expect(page.get_by_text("openid")).to_be_visible()
        shot(page, "oauth-01-consent")
        page.get_by_role("button", name="Allow").click()
        expect(page).to_have_url(re.compile(rf"^{re.escape(site.app_origin('alice', 'signin'))}/"), timeout=30_000)
        expect_text(page, "Hello alice (alice)", seen)
        expect_text(page, "whoami says alice, scope openid profile", seen)
        shot(page, "oauth-02-signed-in")
    finally:
        page.context.close()


def test_user_outside_the_authorized_org_is_refused(site: Site, browser: Browser) -> None:
    page = fresh_page(browser)
    try:
        sign_in_from_the_app(page, site, "bob")
        expect(page.get_by_role("heading", name="You may not sign in to alice/signin")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("only lets members of acme sign in, and bob is not one")
        shot(page, "oauth-03-refused")
    finally:
        page.context.close()


def test_the_client_secret_is_in_no_log_or_file(site: Site) -> None:
    """The app got OAUTH_CLIENT_SECRET in clear (it signed in above); nothing on disk has it in clear."""
    _, secret = site.credentials("alice/signin")
    roots = [site.server.data_dir, site.server.log_path]
    found = [str(path) for root in roots for path in ([root] if root.is_file() else root.rglob("*"))
             if path.is_file() and secret.encode() in path.read_bytes()]
    assert not found, f"the client secret is in clear in {found}"
