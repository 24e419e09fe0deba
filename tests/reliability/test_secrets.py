"""A canary secret, end to end: it reaches the app's environment and nothing else.

It never appears in an API response, the build or run logs (masked as ***), the data dir (repos,
artifacts, SQLite file and its WAL), the git repo, or a duplicate made by another user. Tokens are stored
hashed: their plaintext is nowhere in the data dir either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gitrepo import git, make_repo, push, remote
from tests.support.server import TRUSTED_PATHS, LiveServer, make_server
from tests.support.spaces import wait_stage

ENV_APP = {
    "README.md": "---\ntitle: Env\nsdk: gradio\nstartup_duration_timeout: 2m\n---\n",
    # A plain HTTP server (no gradio import: fast) that prints its environment at startup and serves it.
    "app.py": (
        "import json, os\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        "for key, value in sorted(os.environ.items()):\n"
        "    print(f'ENV {key}={value}', flush=True)\n"
        "class Handler(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = json.dumps(dict(os.environ)).encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('content-type', 'application/json')\n"
        "        self.send_header('content-length', str(len(body)))\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "HTTPServer((os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1'), int(os.environ['PORT'])), Handler).serve_forever()\n"
    ),
}
CANARY = f"canary-{uuid.uuid4().hex}"
RUNNING = {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("secrets"), SPACEPORT_PATH_APPS=TRUSTED_PATHS).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    return {name: server.create_user(name) for name in ("alice", "bob")}


def api(server: LiveServer, method: str, path: str, token: str | None, **kw: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def app_env(server: LiveServer, space: str, token: str) -> dict[str, str]:
    response = api(server, "GET", f"/apps/{space}/", token)
    assert response.status_code == 200, response.text[:500]
    return dict(response.json())


def sse_text(server: LiveServer, path: str, token: str) -> str:
    response = api(server, "GET", path, token)
    assert response.status_code == 200, response.text[:500]
    return "\n".join(json.loads(line[5:])["data"] for line in response.text.splitlines() if line.startswith("data:"))


@pytest.fixture(scope="module")
def envapp(server: LiveServer, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """alice/envapp: a secret CANARY_SECRET and a variable PUBLIC_VAR, then a push; RUNNING."""
    alice = tokens["alice"]
    created = api(server, "POST", "/api/repos/create", alice, json={"type": "space", "name": "envapp", "organization": "alice",
                                                                  "sdk": "gradio"})
    assert created.status_code == 200, created.text
    secret = api(server, "POST", "/api/spaces/alice/envapp/secrets", alice, json={"key": "CANARY_SECRET", "value": CANARY})
    assert secret.status_code == 200, secret.text
    assert CANARY not in secret.text
    variable = api(server, "POST", "/api/spaces/alice/envapp/variables", alice, json={"key": "PUBLIC_VAR", "value": "visible"})
    assert variable.status_code == 200 and CANARY not in variable.text
    repo = make_repo(tmp_path_factory.mktemp("envapp") / "repo", ENV_APP)
    push(repo, remote(server.url, "alice", "envapp", "alice", alice))
    state = wait_stage(server, "alice/envapp", RUNNING)
    assert state["stage"] == "RUNNING", state
    return "alice/envapp"


def test_the_secret_reaches_the_app(server: LiveServer, tokens: dict[str, str], envapp: str) -> None:
    env = app_env(server, envapp, tokens["alice"])
    assert env.get("CANARY_SECRET") == CANARY and env.get("PUBLIC_VAR") == "visible"


@pytest.mark.parametrize("path", [
    "/api/spaces/alice/envapp", "/api/spaces/alice/envapp/runtime", "/api/spaces/alice/envapp/variables",
    "/api/spaces/alice/envapp/secrets", "/api/spaces/alice/envapp/secrets/missing", "/api/spaces?author=alice",
    "/api/spaces?author=alice&full=true", "/api/spaces?search=envapp", "/api/whoami-v2",
    "/api/spaces/alice/envapp/revision/main", "/api/spaces/alice/envapp/tree/main",
])
def test_no_api_response_contains_the_secret(server: LiveServer, tokens: dict[str, str], envapp: str, path: str) -> None:
    response = api(server, "GET", path, tokens["alice"])
    assert response.status_code == 200, response.text[:500]
    assert CANARY not in response.text
    if path.endswith("/secrets"):
        assert "CANARY_SECRET" in response.text  # the key is listed, the value is not


def test_logs_mask_the_secret(server: LiveServer, tokens: dict[str, str], envapp: str) -> None:
    build = sse_text(server, "/api/spaces/alice/envapp/logs/build?follow=false", tokens["alice"])
    assert "Build succeeded" in build and CANARY not in build
    run = sse_text(server, "/api/spaces/alice/envapp/logs/run?follow=false", tokens["alice"])
    assert "ENV PUBLIC_VAR=visible" in run  # the app did print its environment
    assert "ENV CANARY_SECRET=***" in run and CANARY not in run


def test_git_repo_holds_no_secret(server: LiveServer, tokens: dict[str, str], envapp: str, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", remote(server.url, "alice", "envapp", "alice", tokens["alice"]), str(clone))
    dump = git(clone, "log", "-p", "--all").stdout
    assert "app.py" in dump and CANARY not in dump


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Every file under root whose bytes contain needle, except apps' own output logs."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink() or path.name.startswith("app.log"):
            continue
        try:
            if needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def test_data_dir_holds_neither_secret_nor_tokens_in_plaintext(server: LiveServer, tokens: dict[str, str], envapp: str) -> None:
    db = server.data_dir / "spaceport.db"
    assert db.exists() and (server.data_dir / "repos").is_dir()
    assert files_containing(server.data_dir, CANARY.encode()) == []
    for token in tokens.values():
        assert files_containing(server.data_dir, token.encode()) == []


def test_duplicate_by_another_user_does_not_get_the_secret(server: LiveServer, tokens: dict[str, str], envapp: str) -> None:
    bob = tokens["bob"]
    dup = api(server, "POST", "/api/spaces/alice/envapp/duplicate", bob, json={"repository": "bob/envcopy"})
    assert dup.status_code == 200, dup.text
    assert CANARY not in dup.text and "CANARY_SECRET" in dup.json()["missingSecrets"]
    state = wait_stage(server, "bob/envcopy", RUNNING, token=bob)
    assert state["stage"] == "RUNNING", state
    env = app_env(server, "bob/envcopy", bob)
    assert env.get("PUBLIC_VAR") == "visible"  # variables are copied
    assert "CANARY_SECRET" not in env and CANARY not in json.dumps(env)
    run = sse_text(server, "/api/spaces/bob/envcopy/logs/run?follow=false", bob)
    assert "ENV PUBLIC_VAR=visible" in run and CANARY not in run
    assert CANARY not in api(server, "GET", "/api/spaces/bob/envcopy/secrets", bob).text
