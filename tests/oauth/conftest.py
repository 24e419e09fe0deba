"""Live-server fixtures for sign-in for apps: users, an org, logged-in clients, a space's OAuth client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from controller.config import Settings
from controller.db.models import OAuthClient, Space
from controller.services.platform import Platform
from tests.support.gitrepo import make_repo, push, remote
from tests.support.server import LiveServer
from tests.web.conftest import PASSWORD, csrf_of


@dataclass
class Site:
    server: LiveServer
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def app_origin(self, owner: str, name: str) -> str:
        return f"http://{owner}-{name}.localhost:{self.server.port}".lower()

    def push(self, owner: str, name: str, files: dict[str, str], workdir: Path) -> None:
        repo = make_repo(workdir / f"{owner}-{name}", files)
        push(repo, remote(self.url, owner, name, owner, self.tokens[owner]))

    def credentials(self, space: str) -> tuple[str, str]:
        """The space's client id and secret, as its app receives them (read with the site's own key)."""
        owner, _, name = space.partition("/")
        platform = Platform(Settings(data_dir=self.server.data_dir))
        try:
            with platform.sessions() as session:
                row = session.scalar(select(OAuthClient).join(Space, Space.id == OAuthClient.space_id)
                                     .where(Space.slug == f"{owner}-{name}".lower()))
                assert row is not None, f"{space} has no OAuth client"
                return row.client_id, platform.cipher.decrypt(row.secret_ciphertext)
        finally:
            platform.dispose()


def login(client: httpx.Client, user: str) -> None:
    page = client.get("/login")
    response = client.post("/login", data={"username": user, "password": PASSWORD, "next": "/",
                                           "csrf": csrf_of(page.text)})
    assert response.status_code == 303, response.text[:500]


def make_site(server: LiveServer) -> Iterator[Site]:
    server.start(timeout=300)
    tokens = {name: server.create_user(name, password=PASSWORD) for name in ("alice", "bob", "carol")}
    server.cli("orgs", "create", "acme", "--member", "alice")
    try:
        yield Site(server, tokens)
    finally:
        server.close()


@pytest.fixture
def clients(site: Site) -> Iterator[dict[str, httpx.Client]]:
    """Logged-in web clients per user, opened on demand (cookies kept, redirects not followed)."""
    opened: dict[str, httpx.Client] = {}

    class Clients(dict[str, httpx.Client]):
        def __missing__(self, user: str) -> httpx.Client:
            client = httpx.Client(base_url=site.url, timeout=30, follow_redirects=False)
            if user != "guest":
                login(client, user)
            self[user] = client
            return client

    jar = Clients(opened)
    yield jar
    for client in jar.values():
        client.close()
