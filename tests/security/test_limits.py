"""Abuse limits in-process (issue 19): body and JSON-depth limits, frame headers, stream caps, log feeds,
login throttling, server-side sessions, equal work for missing users, Secure cookies on https sites.
The live counterparts (200 streams against `spaceport serve`, a 50 MB download) are in test_abuse.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from controller.api.framing import FrameGuard
from controller.api.limits import RequestLimits, StreamLimiter, StreamLimitReached, too_deep
from controller.api.logfeeds import Line, LogHub
from controller.app import create_app
from controller.config import Settings
from controller.domain.errors import Unauthorized
from controller.services import accounts
from controller.services.throttle import LoginThrottle

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "correct-horse-1"


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# ----------------------------------------------------------------------------- JSON depth

def test_too_deep_counts_nesting_not_strings() -> None:
    assert too_deep(deep(1000), 64)
    assert not too_deep(deep(64), 64) and too_deep(deep(65), 64)
    assert not too_deep(b'{"a": "' + b"[" * 5000 + b'"}', 64)  # brackets inside a string are text
    assert not too_deep(b'{"files": [' + b'{"path": "x", "size": 1},' * 5000 + b'{}]}', 64)  # wide, not deep
    assert too_deep(b'{"a": ' + b'{"b": [' * 40 + b"1" + b"]}" * 40 + b"}", 64)


# ----------------------------------------------------------------------------- body limits

async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def _json(request: Request) -> JSONResponse:
    return JSONResponse({"keys": len(await request.json())})


def limited_client(tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path, max_body_bytes=4096, max_commit_bytes=65536, max_push_bytes=1 << 20)
    inner = Starlette(routes=[Route("/api/validate-yaml", _echo, methods=["POST"]),
                              Route("/api/repos/create", _json, methods=["POST"]),
                              Route("/api/spaces/a/b/commit/main", _echo, methods=["POST"]),
                              Route("/spaces/a/b/git-receive-pack", _echo, methods=["POST"])])
    return TestClient(RequestLimits(inner, settings))


def test_body_over_the_limit_is_refused_by_content_length(tmp_path: Path) -> None:
    client = limited_client(tmp_path)
    refused = client.post("/api/validate-yaml", content=b"x" * 5000)
    assert refused.status_code == 413, refused.text
    assert "4 KiB" in refused.json()["error"] and "SPACEPORT_MAX_BODY_BYTES" in refused.json()["error"]
    assert client.post("/api/validate-yaml", content=b"x" * 4000).text == "4000"


def test_streamed_body_without_length_is_counted(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"y" * 1000  # chunked: no Content-Length to trust

    refused = limited_client(tmp_path).post("/api/validate-yaml", content=chunks())
    assert refused.status_code == 413 and "SPACEPORT_MAX_BODY_BYTES" in refused.text


def test_commits_and_pushes_have_their_own_larger_limits(tmp_path: Path) -> None:
    client = limited_client(tmp_path)
    assert client.post("/api/spaces/a/b/commit/main", content=b"c" * 60000).text == "60000"
    refused = client.post("/api/spaces/a/b/commit/main", content=b"c" * 70000)
    assert refused.status_code == 413 and "SPACEPORT_MAX_COMMIT_BYTES" in refused.text
    assert client.post("/spaces/a/b/git-receive-pack", content=b"p" * 500_000).text == "500000"
    assert client.post("/spaces/a/b/git-receive-pack", content=b"p" * (2 << 20)).status_code == 413


def test_deep_json_is_a_400_that_says_so(tmp_path: Path) -> None:
    client = limited_client(tmp_path)
    refused = client.post("/api/repos/create", content=deep(1000), headers={"content-type": "application/json"})
    assert refused.status_code == 400 and "nested more than 64 levels" in refused.json()["error"]
    ok = client.post("/api/repos/create", content=b'{"name": "x", "a": [[1]]}', headers={"content-type": "application/json"})
    assert ok.json() == {"keys": 2}


# ----------------------------------------------------------------------------- frame headers

def test_frame_guard_adds_headers_and_keeps_a_page_policy() -> None:
    async def page(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"Content-Security-Policy": "default-src 'self'; frame-ancestors *"})

    async def plain(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    client = TestClient(FrameGuard(Starlette(routes=[Route("/p", page), Route("/q", plain)])))
    with_policy = client.get("/p")
    assert with_policy.headers["x-frame-options"] == "DENY"
    assert with_policy.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
    assert client.get("/q").headers["content-security-policy"] == "frame-ancestors 'none'"


# ----------------------------------------------------------------------------- streams

def test_stream_limiter_caps_per_client_and_per_space() -> None:
    limiter = StreamLimiter(per_client=2, per_space=3)
    limiter.acquire("1.1.1.1", 1)
    limiter.acquire("1.1.1.1", 2)
    with pytest.raises(StreamLimitReached, match="SPACEPORT_STREAMS_PER_CLIENT"):
        limiter.acquire("1.1.1.1", 3)
    limiter.acquire("2.2.2.2", 1)
    limiter.acquire("3.3.3.3", 1)
    with pytest.raises(StreamLimitReached, match="SPACEPORT_STREAMS_PER_SPACE"):
        limiter.acquire("4.4.4.4", 1)
    limiter.release("1.1.1.1", 1)
    limiter.acquire("4.4.4.4", 1)  # a released slot is free again
    assert limiter.open_streams() == 4


def test_log_feed_has_one_reader_for_all_followers() -> None:
    starts: list[int] = []

    async def scenario() -> list[list[str]]:
        release = asyncio.Event()

        async def source() -> AsyncIterator[Line]:
            starts.append(1)
            yield Line(1, "first")
            await release.wait()
            yield Line(2, "second")

        hub = LogHub()

        async def follower() -> list[str]:
            seen: list[str] = []
            async with hub.follow("run:x", source) as feed:
                seq = 0
                while not feed.done or feed.since(seq)[0]:
                    lines, _ = feed.since(seq)
                    for line in lines:
                        seq = line.seq
                        seen.append(line.text)
                    if not lines and not feed.done:
                        await feed.changed(5)
            return seen

        tasks = [asyncio.create_task(follower()) for _ in range(50)]
        await asyncio.sleep(0)
        while len(hub.feeds["run:x"].history) < 1:
            await asyncio.sleep(0.01)
        release.set()
        done = await asyncio.gather(*tasks)
        assert hub.feeds == {}  # the last follower gone: the feed and its reader end
        return done

    results = asyncio.run(scenario())
    assert starts == [1]
    assert all(r == ["first", "second"] for r in results)


# ----------------------------------------------------------------------------- login throttle

def test_login_throttle_counts_failures_per_user_and_address() -> None:
    now = [1000.0]
    throttle = LoginThrottle(attempts=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("alice", "10.0.0.1") is None
        throttle.failed("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 60
    assert throttle.retry_after("ALICE", "10.0.0.1") == 60  # names are case-insensitive
    assert throttle.retry_after("alice", "10.0.0.2") is None and throttle.retry_after("bob", "10.0.0.1") is None
    now[0] += 61
    assert throttle.retry_after("alice", "10.0.0.1") is None


# ----------------------------------------------------------------------------- sessions (in-process app)

@pytest.fixture
def https_site(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", public_url="https://spaceport.example", apps_domain="apps.example",
                        login_attempts=3, embedded_worker=False)
    app = create_app(settings)
    platform = app.state.platform
    platform.migrate()
    with platform.tx() as session:
        accounts.create_user(session, "alice", password=PASSWORD)
    yield TestClient(app, base_url="https://spaceport.example", follow_redirects=False)
    platform.dispose()


def _login(client: TestClient, user: str, password: str) -> Any:  # starlette's client response type
    token = CSRF_RE.search(client.get("/login").text)
    assert token
    return client.post("/login", data={"username": user, "password": password, "next": "/", "csrf": token.group(1)})


def test_session_cookie_is_secure_on_https_and_dies_at_logout(https_site: TestClient) -> None:
    response = _login(https_site, "alice", PASSWORD)
    assert response.status_code == 303, response.text[:300]
    set_cookie = response.headers["set-cookie"]
    assert "spaceport_session=" in set_cookie and "Secure" in set_cookie and "HttpOnly" in set_cookie
    stolen = https_site.cookies.get("spaceport_session")
    assert https_site.get("/settings/tokens").status_code == 200
    token = CSRF_RE.search(https_site.get("/settings/tokens").text)
    assert token
    assert https_site.post("/logout", data={"csrf": token.group(1)}).status_code == 303
    replay = TestClient(https_site.app, base_url="https://spaceport.example", follow_redirects=False)
    replay.cookies.set("spaceport_session", str(stolen))
    assert replay.get("/settings/tokens").status_code == 303  # to /login: the copied cookie is worthless now


def test_login_is_throttled_with_retry_after(https_site: TestClient) -> None:
    for _ in range(3):
        assert _login(https_site, "alice", "wrong-password").status_code == 401
    throttled = _login(https_site, "alice", PASSWORD)  # even the right password waits
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    assert "Too many failed logins" in throttled.text
    assert _login(https_site, "nobody", "wrong-password").status_code == 401  # other names are not locked


def test_missing_user_costs_a_password_hash_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    from controller.services.platform import Platform

    platform = Platform(settings)
    platform.migrate()
    with platform.tx() as session:
        accounts.create_user(session, "alice", password=PASSWORD)
        accounts.create_user(session, "tokenonly")
    with platform.tx() as session, pytest.raises(Unauthorized):
        accounts.authenticate_password(session, "warm-up", "x")
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counting)
    for name in ("alice", "nobody", "tokenonly"):
        with platform.tx() as session, pytest.raises(Unauthorized):
            accounts.authenticate_password(session, name, "wrong-password")
    assert calls == [1, 1, 1]
    platform.dispose()
