"""The web UI in real Chromium: log in, create, push, watch the build, use the app, hardware, duplicate, admin."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.support.browser import CHROMIUM_ARGS, until_shown, watch
from tests.support.spaces import wait_stage
from tests.web.conftest import FIXTURES, PASSWORD, SCREENSHOTS, Site

pytestmark = pytest.mark.browser
FAILED = {"BUILD_ERROR", "CONFIG_ERROR", "RUNTIME_ERROR"}  # a fresh space is NO_APP_FILE until the push lands
BUILD_TIMEOUT_MS = 540_000  # a cold sandboxed gradio build (per-owner cache copied from the seed) on 2 cores


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[dict[str, Page]]:
    """One isolated browser context (cookie jar) per user, opened on demand."""
    contexts = []
    opened: dict[str, Page] = {}

    class Pages(dict[str, Page]):
        def __missing__(self, user: str) -> Page:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            contexts.append(context)
            page = context.new_page()
            self[user] = page
            return page

    yield Pages(opened)
    for context in contexts:
        context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, site: Site, user: str) -> None:
    page.goto(f"{site.url}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name=user, exact=True)).to_be_visible()


def create_space(page: Page, site: Site, name: str, sdk: str, owner: str | None = None) -> None:
    page.goto(f"{site.url}/new")
    if owner:
        page.get_by_label("Owner").select_option(owner)
    page.get_by_label("Space name").fill(name)
    page.get_by_label(sdk, exact=True).check()
    page.get_by_role("button", name="Create space").click()
    expect(page).to_have_url(re.compile(rf"/spaces/[^/]+/{name}$"))


def test_login_create_and_push_shows_files_and_commits(site: Site, pages: dict[str, Page], tmp_path: Path) -> None:
    page = pages["alice"]
    log_in(page, site, "alice")
    create_space(page, site, "pages", "static")
    expect(page.get_by_text("This space has no code yet")).to_be_visible()
    expect(page.locator("pre.code").first).to_contain_text(f"git clone {site.url}/spaces/alice/pages")
    shot(page, "01-new-space-push-instructions")
    site.push("alice", "pages", FIXTURES / "static", tmp_path / "pages")
    page.get_by_role("link", name="Files").click()
    page.get_by_role("link", name="index.html").click()
    expect(page.locator("pre.file")).to_contain_text("Hello from a static space")
    page.get_by_role("link", name="Commits").click()
    expect(page.get_by_role("cell", name="initial")).to_be_visible()
    shot(page, "02-commits")


@pytest.mark.pipeline
@pytest.mark.timeout(660)
def test_watch_build_live_then_use_the_gradio_app(site: Site, pages: dict[str, Page], tmp_path: Path) -> None:
    page = pages["alice"]
    log_in(page, site, "alice")
    create_space(page, site, "greet", "gradio")
    page.get_by_role("link", name="Logs").click()
    expect(page.locator("[data-log-state=build]")).to_be_visible()
    site.push("alice", "greet", FIXTURES / "gradio", tmp_path / "greet")
    expect(page.locator("#build-log")).not_to_be_empty(timeout=60_000)  # lines stream in while building
    shot(page, "03-build-log-streaming")
    state = wait_stage(site.server, "alice/greet", {"RUNNING", *FAILED}, timeout=BUILD_TIMEOUT_MS / 1000)
    assert state["stage"] == "RUNNING", f"{state}\n{site.server.logs()[-4000:]}"  # the build's own error, if any
    expect(page.locator(".space-head .badge")).to_have_text("RUNNING")  # the page followed without a reload
    shot(page, "04-running")
    seen = watch(page)
    page.get_by_role("link", name="App", exact=True).click()
    app = page.frame_locator("#app-frame")
    try:  # a first visit loads Gradio's whole frontend through the proxy: give a loaded machine its time
        until_shown(page, lambda ms: app.get_by_label("name").fill("Spaceport", timeout=ms), seen, 60,
                    reload=page.reload)
    except PlaywrightError as exc:
        raise AssertionError(f"the app's form never appeared: {exc}\n" + "\n".join(seen[-80:])) from None
    app.get_by_role("button", name="Submit").click()
    expect(app.get_by_label("output")).to_have_value("Hello Spaceport!", timeout=60_000)
    shot(page, "05-gradio-in-iframe")


def test_hardware_beyond_quota_is_refused_then_admin_grants_it(site: Site, pages: dict[str, Page]) -> None:
    alice = pages["alice"]
    log_in(alice, site, "alice")
    create_space(alice, site, "gpu", "gradio")
    alice.get_by_role("link", name="Settings").click()
    alice.locator("#hw-a10g-small").check()
    alice.get_by_role("button", name="Switch hardware").click()
    expect(alice.locator(".flash.error")).to_contain_text(re.compile("quota", re.I))
    shot(alice, "06-hardware-refused")

    root = pages["root"]
    log_in(root, site, "root")
    root.get_by_role("link", name="Admin").click()
    root.get_by_label("Type").select_option("nvidia-a10g")
    root.get_by_label("How many").fill("2")
    root.get_by_role("button", name="Add devices").click()
    expect(root.locator(".flash.ok")).to_contain_text("Added 2 nvidia-a10g")
    root.get_by_label("User or organization").fill("alice")
    root.locator("#q-acc").select_option("nvidia-a10g")
    root.get_by_label("Devices").fill("1")
    root.get_by_role("button", name="Set quota").click()
    expect(root.locator("#quotas")).to_contain_text("alice")
    shot(root, "07-admin-quota-set")

    alice.reload()
    alice.locator("#hw-a10g-small").check()
    alice.get_by_role("button", name="Switch hardware").click()
    expect(alice.locator(".flash.ok")).to_contain_text("Hardware set to a10g-small")
    shot(alice, "08-hardware-granted")


def test_duplicate_as_another_user(site: Site, pages: dict[str, Page], tmp_path: Path) -> None:
    alice = pages["alice"]
    log_in(alice, site, "alice")
    create_space(alice, site, "original", "static")
    site.push("alice", "original", FIXTURES / "static", tmp_path / "original")
    bob = pages["bob"]
    log_in(bob, site, "bob")
    bob.goto(f"{site.url}/spaces/alice/original")
    bob.get_by_role("link", name="Duplicate").click()
    dialog = bob.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Space name").fill("my-copy")
    shot(bob, "09-duplicate-dialog")
    dialog.get_by_role("button", name="Duplicate space").click()
    expect(bob).to_have_url(f"{site.url}/spaces/bob/my-copy")
    expect(bob.get_by_text("Duplicated from")).to_be_visible()
    bob.get_by_role("link", name="Files").click()
    expect(bob.get_by_role("link", name="index.html")).to_be_visible()
    shot(bob, "10-duplicated")


def test_home_cards_filters_and_live_badges(site: Site, pages: dict[str, Page]) -> None:
    page = pages["guest"]
    page.goto(f"{site.url}/")
    expect(page.get_by_role("heading", name="Spaces")).to_be_visible()
    page.get_by_label("SDK").select_option("static")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"sdk=static"))
    expect(page.locator(".card").first).to_be_visible()
    expect(page.locator(".card .badge").first).to_have_attribute("data-stage", re.compile(r"[A-Z_]+"))
    page.set_viewport_size({"width": 390, "height": 800})
    shot(page, "11-home-mobile")
