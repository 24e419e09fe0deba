"""Fixtures for the web UI tests: one live server per module, users, and logged-in HTTP clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.gitrepo import make_repo, push, remote
from tests.support.server import LiveServer, make_server

PASSWORD = "correct-horse-1"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "spaces"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pipeline: needs the push -> build -> RUNNING pipeline (real builds)")


@dataclass
class Site:
    server: LiveServer
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    @contextmanager
    def client(self, user: str | None = None) -> Iterator[httpx.Client]:
        """An HTTP client; logged in through the real /login form when user is given."""
        with httpx.Client(base_url=self.url, timeout=30, follow_redirects=False) as client:
            if user is not None:
                login(client, user)
            yield client

    def push(self, owner: str, name: str, files: dict[str, str] | Path, workdir: Path, user: str | None = None) -> None:
        who = user or owner
        repo = make_repo(workdir, files)
        push(repo, remote(self.url, owner, name, who, self.tokens[who]))


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client: httpx.Client, user: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/login")
    response = client.post("/login", data={"username": user, "password": password, "next": "/",
                                           "csrf": csrf_of(page.text)})
    assert response.status_code == 303, response.text[:500]
    return response


def post_form(client: httpx.Client, page_url: str, action: str, data: dict[str, str]) -> httpx.Response:
    """GET a page for its CSRF token, then POST a form to action (like the browser does)."""
    token = csrf_of(client.get(page_url).text)
    return client.post(action, data={**data, "csrf": token})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = make_server(tmp_path_factory.mktemp("web")).start(timeout=300)  # a bound on a loaded machine
    tokens = {
        "alice": server.create_user("alice", password=PASSWORD),
        "bob": server.create_user("bob", password=PASSWORD),
        "root": server.create_user("root", admin=True, password=PASSWORD),
    }
    server.cli("orgs", "create", "acme", "--member", "alice")
    try:
        yield Site(server, tokens)
    finally:
        server.close()
