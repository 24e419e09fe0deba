"""Browser test helpers shared by the web UI and sign-in tests."""

from __future__ import annotations

from playwright.sync_api import Page


def watch(page: Page) -> list[str]:
    """What the page loaded, failed to load and logged, for a failure message (CI twice saw a blank app)."""
    seen: list[str] = []
    page.on("console", lambda msg: seen.append(f"console {msg.type}: {msg.text[:300]}"))
    page.on("pageerror", lambda error: seen.append(f"page error: {str(error)[:300]}"))
    page.on("requestfailed", lambda req: seen.append(f"failed {req.method} {req.url[:200]}: {req.failure}"))
    page.on("response", lambda resp: seen.append(f"{resp.status} {resp.request.method} {resp.url[:200]}"))
    return seen
