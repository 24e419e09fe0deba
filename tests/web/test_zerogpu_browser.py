"""The admin's ZeroGPU page in real Chromium: reached from /admin, the defaults form saves, the usage
tables render (screenshot in tests/artifacts/screenshots/zerogpu-admin.png)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.support.browser import CHROMIUM_ARGS
from tests.web.conftest import Site
from tests.web.test_browser import log_in, shot

pytestmark = pytest.mark.browser


@pytest.fixture
def root_page(chromium_path: str, site: Site) -> Iterator[Page]:
    """A signed-in admin's page in its own Chromium."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
        log_in(page, site, "root")
        yield page
        chromium.close()


def test_admin_opens_the_zerogpu_page_and_saves_defaults(site: Site, root_page: Page) -> None:
    site.server.cli("zerogpu", "add-device", "nvidia-t4", "--index", "3", "--uuid", "GPU-browser-t4-3")
    root_page.goto(f"{site.url}/admin")
    root_page.get_by_role("link", name="ZeroGPU: shared GPUs, GPU seconds and usage").click()
    expect(root_page.get_by_role("heading", name="ZeroGPU", exact=True)).to_be_visible()
    expect(root_page.get_by_text("GPU-browser-t4-3")).to_be_visible()
    root_page.get_by_label("Signed-in (s/day)").fill("321")
    root_page.get_by_role("button", name="Save defaults").click()
    expect(root_page.get_by_role("status")).to_have_text("ZeroGPU defaults saved.")
    expect(root_page.get_by_label("Signed-in (s/day)")).to_have_value("321")
    shot(root_page, "zerogpu-admin")
