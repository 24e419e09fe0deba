"""Browser test helpers shared by the web UI and sign-in tests."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def without_netlink(chromium: Path, where: Path) -> Path:
    """A script in `where` that runs `chromium` with its arguments under nonetlink.py's filter."""
    script = where / "chromium"
    filter_script = Path(__file__).with_name("nonetlink.py")
    command = shlex.join([sys.executable, str(filter_script), str(chromium)])
    script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    script.chmod(0o755)
    return script


def watch(page: Page) -> list[str]:
    """What the page loaded, failed to load and logged, for a failure message (CI twice saw a blank app)."""
    seen: list[str] = []
    page.on("console", lambda msg: seen.append(f"console {msg.type}: {msg.text[:300]}"))
    page.on("pageerror", lambda error: seen.append(f"page error: {str(error)[:300]}"))
    page.on("requestfailed", lambda req: seen.append(f"failed {req.method} {req.url[:200]}: {req.failure}"))
    page.on("response", lambda resp: seen.append(f"{resp.status} {resp.request.method} {resp.url[:200]}"))
    return seen


NETWORK_CHANGED = "ERR_NETWORK_CHANGED"


def until_shown(page: Page, show: Callable[[int], None], seen: list[str], timeout: float, reload: Callable[[], None],
                tries: int = 10) -> None:
    """Run `show(ms)` (an expect that raises AssertionError, or a Playwright action that raises its Error)
    until it passes or `timeout` seconds are up. If the page saw `net::ERR_NETWORK_CHANGED` anyway (the
    `chromium_path` fixture's Chromium cannot see the host's interfaces change: support/nonetlink.py),
    `reload()` up to `tries` times, as a visitor would press reload. Any other failure is the test's."""
    deadline = time.monotonic() + timeout
    mark = len(seen)
    while True:
        try:
            show(2_000)
            return
        except (AssertionError, PlaywrightError):
            changed = any(NETWORK_CHANGED in line for line in seen[mark:])
            if changed and tries > 1:
                tries, mark = tries - 1, len(seen)
                reload()
                continue
            if time.monotonic() > deadline:
                raise
