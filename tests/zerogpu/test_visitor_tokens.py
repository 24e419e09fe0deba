"""The proxy side of ZeroGPU: requests bound for a zero-* space carry an X-IP-Token the site signed for
that space and visitor; whatever X-IP-Token a visitor sends is dropped (attacker test), on every space.
Which routes take one is routing.derive's call (tests/dataplane/test_routing_zero.py); here the route says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.api.zerogpu import VisitorTokens
from controller.config import Settings
from controller.db.models import Space
from controller.domain import zerogpu as dz
from controller.proxy.routes import RouteTable
from controller.proxy.types import Route
from controller.services.accounts import create_token, create_user
from controller.services.platform import Platform

SITE = "http://spaceport.test"
FORGED = dz.sign_visitor_token("not-the-site-key", SITE, "o/gpu", dz.user_visitor(1), 0)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The 'app': answers with the X-IP-Token headers it received, one per line."""
    seen = b"\n".join(v for k, v in scope["headers"] if k == b"x-ip-token")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": seen})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Platform, str, int]]:
    platform = Platform(Settings(data_dir=tmp_path / "data", public_url=SITE))
    platform.migrate()
    with platform.tx() as session:
        owner = create_user(session, "o")
        visitor = create_user(session, "vic")
        token = create_token(session, visitor, scope="read")
        session.add_all([Space(owner_id=owner.id, name="gpu", slug="o-gpu", requested_hardware="zero-t4"),
                         Space(owner_id=owner.id, name="cpu", slug="o-cpu", requested_hardware="cpu-basic")])
        visitor_id = visitor.id
    yield platform, token, visitor_id
    platform.dispose()


async def call(platform: Platform, host: str, path: str = "/", headers: dict[str, str] | None = None) -> list[str]:
    routes = RouteTable([Route("o/gpu", "o-gpu", "http://127.0.0.1:1", visitor_token=True), Route("o/cpu", "o-cpu", "http://127.0.0.1:1")])
    app = VisitorTokens(echo, platform=platform, routes=routes, apps_domain="apps.test")
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 5555))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        res = await client.get(path, headers={"host": host, **(headers or {})})
    return [line for line in res.text.splitlines() if line]


async def test_zero_space_gets_a_signed_token_and_a_visitors_own_is_dropped(setup: tuple[Platform, str, int]) -> None:
    platform, _token, _ = setup
    seen = await call(platform, "o-gpu.apps.test", headers={"X-IP-Token": FORGED})
    assert len(seen) == 1 and seen[0] != FORGED
    visitor = dz.verify_visitor_token(platform.settings.key, SITE, "o/gpu", seen[0], dz_now())
    assert visitor == dz.anonymous_visitor("198.51.100.7")  # no credentials: the client address


async def test_signed_in_visitor_is_named_by_the_token_and_path_urls_work_too(setup: tuple[Platform, str, int]) -> None:
    platform, token, visitor_id = setup
    seen = await call(platform, "spaceport.test", "/apps/o/gpu/run", headers={"X-HF-Authorization": f"Bearer {token}"})
    assert dz.verify_visitor_token(platform.settings.key, SITE, "o/gpu", seen[0], dz_now()) == dz.user_visitor(visitor_id)
    wrong = await call(platform, "o-gpu.apps.test", headers={"Authorization": "Bearer sp_revoked_or_made_up"})
    assert dz.verify_visitor_token(platform.settings.key, SITE, "o/gpu", wrong[0], dz_now()) == dz.anonymous_visitor("198.51.100.7")


async def test_other_spaces_and_platform_pages_get_no_token(setup: tuple[Platform, str, int]) -> None:
    platform, _, _ = setup
    assert await call(platform, "o-cpu.apps.test", headers={"X-IP-Token": FORGED}) == []  # dropped, none added
    assert await call(platform, "spaceport.test", "/api/whoami", headers={"X-IP-Token": "x"}) == ["x"]  # not app traffic


def dz_now() -> float:
    import time

    return time.time()
