"""Access control, end to end: a private space is invisible to others everywhere (API, git, proxy, UI);
revoked tokens are refused; read tokens cannot write; every web form POST needs its CSRF field."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

import web.routes
from tests.support.gitrepo import git, make_repo, push, remote
from tests.support.server import LiveServer, make_server
from tests.support.spaces import wait_stage
from web.context import require_csrf

pytestmark = pytest.mark.timeout(900)  # live builds on a loaded machine

PASSWORD = "correct-horse-1"
STATIC = {"README.md": "---\nsdk: static\nstartup_duration_timeout: 1m\n---\n", "index.html": "<h1>private page</h1>"}
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
NEW_TOKEN_RE = re.compile(r'id="new-token"[^>]*value="([^"]+)"')
VOLATILE = {"last_used_at", "last_activity_at", "heartbeat_at"}  # touched by reads and timers, not by forms


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("access")).start(timeout=300)  # a bound on a loaded machine
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    return {name: server.create_user(name, admin=name == "root", password=PASSWORD) for name in ("alice", "bob", "root")}


@pytest.fixture(scope="module")
def private_space(server: LiveServer, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    created = bearer(server, "POST", "/api/repos/create", tokens["alice"],
                     json={"type": "space", "name": "priv", "organization": "alice", "sdk": "static", "private": True})
    assert created.status_code == 200, created.text
    repo = make_repo(tmp_path_factory.mktemp("priv") / "repo", STATIC)
    push(repo, remote(server.url, "alice", "priv", "alice", tokens["alice"]))
    assert wait_stage(server, "alice/priv", {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR"}, token=tokens["alice"])["stage"] == "RUNNING"
    return "alice/priv"


def bearer(server: LiveServer, method: str, path: str, token: str | None, headers: dict[str, str] | None = None,
           **kw: object) -> httpx.Response:
    sent = {**(headers or {}), **({"authorization": f"Bearer {token}"} if token else {})}
    return httpx.request(method, f"{server.url}{path}", headers=sent, timeout=30, **kw)  # type: ignore[arg-type]


@contextmanager
def logged_in(server: LiveServer, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as client:
        page = client.get("/login")
        response = client.post("/login", data={"username": user, "password": PASSWORD, "next": "/", "csrf": csrf_of(page.text)})
        assert response.status_code == 303, response.text[:300]
        yield client


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def host_get(server: LiveServer, path: str, token: str | None, cookies: dict[str, str] | None = None) -> httpx.Response:
    headers = {"Host": f"alice-priv.localhost:{server.port}"}
    if cookies:
        headers["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return bearer(server, "GET", path, token, headers=headers)


# ----------------------------------------------------------------------------- private spaces

def test_private_space_is_404_in_the_api_for_others(server: LiveServer, tokens: dict[str, str], private_space: str) -> None:
    paths = ["/api/spaces/alice/priv", "/api/spaces/alice/priv/runtime", "/api/spaces/alice/priv/variables",
             "/api/spaces/alice/priv/logs/build?follow=false", "/api/spaces/alice/priv/logs/run?follow=false",
             "/api/spaces/alice/priv/tree/main", "/api/spaces/alice/priv/revision/main"]
    for path in paths:
        assert bearer(server, "GET", path, tokens["alice"]).status_code == 200, path
        for token in (tokens["bob"], None):
            response = bearer(server, "GET", path, token)
            assert response.status_code == 404, (path, response.status_code)
            assert "private page" not in response.text
    for token in (tokens["bob"], None):
        for query in ("author=alice", "search=priv", ""):
            listed = bearer(server, "GET", f"/api/spaces?{query}", token).json()
            assert "alice/priv" not in [s["id"] for s in listed]
    assert "alice/priv" in [s["id"] for s in bearer(server, "GET", "/api/spaces?author=alice", tokens["alice"]).json()]


def test_private_space_cannot_be_cloned_by_others(server: LiveServer, tokens: dict[str, str], private_space: str,
                                                   tmp_path: Path) -> None:
    for user, token in (("bob", tokens["bob"]), (None, None)):
        result = git(tmp_path, "ls-remote", remote(server.url, "alice", "priv", user, token), check=False)
        assert result.returncode != 0 and "private page" not in result.stdout
    assert git(tmp_path, "ls-remote", remote(server.url, "alice", "priv", "alice", tokens["alice"])).stdout.strip()


def test_private_app_is_404_through_the_proxy_for_others(server: LiveServer, tokens: dict[str, str], private_space: str) -> None:
    assert host_get(server, "/", tokens["alice"]).text == "<h1>private page</h1>"
    as_gradio_client = httpx.get(f"{server.url}/", timeout=30, headers={  # gradio_client >= 1 sends it so
        "Host": f"alice-priv.localhost:{server.port}", "X-HF-Authorization": f"Bearer {tokens['alice']}"})
    assert as_gradio_client.text == "<h1>private page</h1>"
    moved = bearer(server, "GET", "/apps/alice/priv/x?y=1", tokens["alice"])  # app content never on this origin
    assert (moved.status_code, moved.headers["location"]) == (307, f"http://alice-priv.localhost:{server.port}/x?y=1")
    with logged_in(server, "bob") as bob:
        bob_cookies = dict(bob.cookies)
    for token, cookies in ((tokens["bob"], None), (None, None), (None, bob_cookies)):
        host = host_get(server, "/", token, cookies)
        path = bearer(server, "GET", "/apps/alice/priv/", token,
                      headers={"cookie": "; ".join(f"{k}={v}" for k, v in (cookies or {}).items())})
        for response in (host, path):
            assert response.status_code == 404, (token is None, cookies is None, response.status_code)
            assert "private page" not in response.text


def test_private_space_page_is_404_in_the_ui_for_others(server: LiveServer, tokens: dict[str, str], private_space: str) -> None:
    pages = ["/spaces/alice/priv", "/spaces/alice/priv/logs", "/spaces/alice/priv/tree", "/spaces/alice/priv/commits",
             "/spaces/alice/priv/blob/index.html", "/spaces/alice/priv/settings"]
    with logged_in(server, "alice") as alice:
        assert alice.get("/spaces/alice/priv").status_code == 200
    with logged_in(server, "bob") as bob, httpx.Client(base_url=server.url, timeout=30) as anon:
        for page in pages:
            assert bob.get(page).status_code == 404, page
            assert anon.get(page).status_code in (303, 404), page  # guests may be sent to log in first
        assert "alice/priv" not in bob.get("/alice").text and "alice/priv" not in anon.get("/").text


# ----------------------------------------------------------------------------- tokens

def test_revoked_token_is_refused_everywhere(server: LiveServer, tokens: dict[str, str], private_space: str,
                                             tmp_path: Path) -> None:
    with logged_in(server, "alice") as alice:
        page = alice.get("/settings/tokens")
        created = alice.post("/settings/tokens", data={"name": "doomed", "scope": "write", "csrf": csrf_of(page.text)})
        match = NEW_TOKEN_RE.search(created.text)
        assert created.status_code == 200 and match, created.text[:500]
        token = match.group(1)
        assert bearer(server, "GET", "/api/whoami-v2", token).json()["name"] == "alice"
        assert host_get(server, "/", token).status_code == 200
        ids = re.findall(r'action="/settings/tokens/(\d+)/revoke"', created.text)
        token_id = max(int(i) for i in ids)  # the newest
        revoked = alice.post(f"/settings/tokens/{token_id}/revoke", data={"csrf": csrf_of(created.text)})
        assert revoked.status_code == 303, revoked.text[:300]
    assert bearer(server, "GET", "/api/whoami-v2", token).status_code == 401
    assert bearer(server, "GET", "/api/spaces/alice/priv", token).status_code in (401, 404)
    assert host_get(server, "/", token).status_code in (401, 404)
    assert git(tmp_path, "ls-remote", remote(server.url, "alice", "priv", "alice", token), check=False).returncode != 0
    repo = make_repo(tmp_path / "r", STATIC)
    assert push(repo, remote(server.url, "alice", "revoked-push", "alice", token), check=False).returncode != 0
    assert bearer(server, "GET", "/api/spaces/alice/revoked-push", tokens["alice"]).status_code == 404


def test_read_token_reads_but_cannot_write(server: LiveServer, tokens: dict[str, str], private_space: str,
                                          tmp_path: Path) -> None:
    read = server.cli("tokens", "create", "alice", "--scope", "read").stdout.strip().splitlines()[-1]
    assert bearer(server, "GET", "/api/spaces/alice/priv", read).status_code == 200
    writes: list[tuple[str, dict[str, object]]] = [
        ("/api/spaces/alice/priv/secrets", {"key": "K", "value": "v"}),
        ("/api/spaces/alice/priv/variables", {"key": "K", "value": "v"}),
        ("/api/spaces/alice/priv/pause", {}), ("/api/spaces/alice/priv/restart", {}),
        ("/api/spaces/alice/priv/sleeptime", {"seconds": 600}),
        ("/api/repos/create", {"type": "space", "name": "by-read-token", "organization": "alice", "sdk": "static"}),
        ("/api/spaces/alice/priv/duplicate", {"repository": "alice/dup-by-read"}),
    ]
    for path, body in writes:
        response = bearer(server, "POST", path, read, json=body)
        assert response.status_code in (401, 403), (path, response.status_code, response.text[:200])
    repo = make_repo(tmp_path / "r", STATIC)
    result = push(repo, remote(server.url, "alice", "priv", "alice", read), check=False)
    assert result.returncode != 0 and "403" in result.stderr
    info = bearer(server, "GET", "/api/spaces/alice/priv/variables", tokens["alice"]).json()
    assert "K" not in info
    assert bearer(server, "GET", "/api/spaces/alice/priv/runtime", tokens["alice"]).json()["stage"] == "RUNNING"
    for name in ("by-read-token", "dup-by-read"):
        assert bearer(server, "GET", f"/api/spaces/alice/{name}", tokens["alice"]).status_code == 404


# ----------------------------------------------------------------------------- CSRF

def web_post_routes() -> list[APIRoute]:
    """Every POST route of every module under web.routes (a new module is crawled too)."""
    routes: list[APIRoute] = []
    for info in pkgutil.iter_modules(web.routes.__path__):
        router = getattr(importlib.import_module(f"web.routes.{info.name}"), "router", None)
        if isinstance(router, APIRouter):
            routes += [r for r in router.routes if isinstance(r, APIRoute) and "POST" in (r.methods or set())]
    return routes


def test_every_web_post_route_declares_the_csrf_check() -> None:
    routes = web_post_routes()
    assert len(routes) >= 15, [r.path for r in routes]
    missing = [r.path for r in routes if require_csrf not in {d.call for d in r.dependant.dependencies}]
    assert missing == []


FORM = {"owner": "alice", "name": "forged", "sdk": "static", "hardware": "cpu-basic", "visibility": "public",
        "flavor": "cpu-upgrade", "seconds": "600", "key": "FORGED", "value": "x", "to_owner": "alice",
        "to_name": "forged-copy", "confirm": "alice/priv", "factory": "1", "accelerator": "nvidia-t4", "count": "3",
        "node": "local", "limit": "5", "username": "mallory", "password": "mallory-password-1", "scope": "write",
        "next": "/"}


def db_rows(server: LiveServer) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table except logs and runtime bookkeeping, without columns reads and timers touch."""
    conn = sqlite3.connect(f"file:{server.data_dir / 'spaceport.db'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {}
        for table in tables:
            if table in ("build_log_lines", "instances"):
                continue
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")') if r[1] not in VOLATILE]
            select = ", ".join(f'"{c}"' for c in cols)
            rows[table] = sorted(conn.execute(f'SELECT {select} FROM "{table}"').fetchall(), key=repr)
        return rows
    finally:
        conn.close()


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_web_posts_without_a_valid_csrf_field_are_refused_and_change_nothing(
        server: LiveServer, tokens: dict[str, str], private_space: str, csrf: str | None) -> None:
    routes = web_post_routes()
    with logged_in(server, "alice") as alice, logged_in(server, "root") as root:
        before = db_rows(server)  # signing in adds the two session rows; nothing after it may change
        token_id = max(int(i) for i in re.findall(r'/settings/tokens/(\d+)/revoke', alice.get("/settings/tokens").text))
        for route in routes:
            path = route.path.replace("{owner}", "alice").replace("{name}", "priv").replace("{token_id}", str(token_id))
            client = root if path.startswith("/admin") else alice
            data = dict(FORM, csrf="A" * 43) if csrf else FORM
            response = client.post(path, data=data)
            assert response.status_code in (400, 403), (path, response.status_code, response.text[:300])
        assert alice.get("/settings/tokens").status_code == 200  # logout did not happen either
        assert db_rows(server) == before
    assert bearer(server, "GET", "/api/spaces/alice/priv/runtime", tokens["alice"]).json()["stage"] == "RUNNING"
