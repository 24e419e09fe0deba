"""Abuse resistance (issue 19), tried as an ordinary user or anonymously: each case was accepted before.

* an admin's read token may look, never change (quotas, inventory, sleep policy);
* git gives one answer for "missing" and "private and not yours" (no existence oracle);
* commit paths are checked like git's verify_path: no newline injection into tree building, no `.git`
  in any spelling, no Unicode look-alikes of `..`;
* a README front matter alias bomb is refused with a CONFIG_ERROR instead of expanding.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from builder.errors import CONFIG_ERROR, SpaceConfigError
from builder.spaceconfig import parse_front_matter
from controller.domain.errors import BadRequest
from controller.git import storage
from controller.services import commits
from tests.security import Identity
from tests.support.gitrepo import git, make_repo, remote
from tests.support.server import LiveServer, make_server

pytestmark = pytest.mark.xdist_group("security-abuse")
STATIC = {"README.md": "---\nsdk: static\n---\n", "index.html": "<h1>hi</h1>"}
BOMB = ("---\nsdk: static\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n---\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("abuse")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def people(server: LiveServer) -> dict[str, Identity]:
    found = {name: Identity(name, server.create_user(name)) for name in ("alice", "bob")}
    found["root"] = Identity("root", server.create_user("root", admin=True))
    read = server.cli("tokens", "create", "root", "--scope", "read").stdout.strip().splitlines()[-1]
    found["root-read"] = Identity("root", read)
    response = httpx.post(f"{server.url}/api/repos/create", headers=found["bob"].headers, timeout=30,
                          json={"type": "space", "name": "secret-plans", "sdk": "static", "private": True})
    assert response.status_code == 200, response.text
    return found


# ----------------------------------------------------------------------------- admin scopes

ADMIN_CHANGES = [("/api/admin/quotas", {"owner": "alice", "accelerator": "nvidia-t4", "limit": 5}),
                 ("/api/admin/accelerators", {"accelerator": "nvidia-t4", "count": 1}),
                 ("/api/admin/sleep", {"deep_after": 1})]


@pytest.mark.parametrize(("path", "body"), ADMIN_CHANGES)
def test_admin_read_token_cannot_change_the_site(server: LiveServer, people: dict[str, Identity], path: str,
                                                 body: dict[str, object]) -> None:
    refused = httpx.post(server.url + path, json=body, headers=people["root-read"].headers, timeout=30)
    assert refused.status_code == 403, refused.text
    assert "read-only" in refused.text and "--scope write" in refused.text
    assert httpx.get(f"{server.url}/api/admin/quotas", headers=people["root-read"].headers, timeout=30).status_code == 200


def test_admin_write_token_still_changes_quotas(server: LiveServer, people: dict[str, Identity]) -> None:
    path, body = ADMIN_CHANGES[0]
    done = httpx.post(server.url + path, json=body, headers=people["root"].headers, timeout=30)
    assert done.status_code == 200, done.text


# ----------------------------------------------------------------------------- git existence oracle

def _info_refs(server: LiveServer, owner: str, name: str, who: Identity | None) -> httpx.Response:
    headers = who.headers if who else {}
    return httpx.get(f"{server.url}/spaces/{owner}/{name}/info/refs", params={"service": "git-upload-pack"},
                     headers=headers, timeout=30)


@pytest.mark.parametrize("caller", [None, "alice"])
def test_git_answers_private_like_missing(server: LiveServer, people: dict[str, Identity], caller: str | None) -> None:
    who = people[caller] if caller else None
    private = _info_refs(server, "bob", "secret-plans", who)
    missing = _info_refs(server, "bob", "no-such-space", who)
    assert private.status_code == missing.status_code == (401 if who is None else 404)
    assert private.text.replace("secret-plans", "X") == missing.text.replace("no-such-space", "X")
    assert private.headers.get("www-authenticate") == missing.headers.get("www-authenticate")


def test_git_push_to_private_answers_like_missing(server: LiveServer, people: dict[str, Identity],
                                                  tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "app", STATIC)
    alice = people["alice"]
    answers = []
    for name in ("secret-plans", "no-such-space"):
        result = git(repo, "push", "-q", remote(server.url, "bob", name, "alice", str(alice.token)), "main", check=False)
        assert result.returncode != 0
        answers.append(result.stderr.replace(name, "X"))
    assert answers[0] == answers[1] and "403" in answers[0], answers


# ----------------------------------------------------------------------------- commit paths

@pytest.mark.parametrize("path", [
    "app.py\n100644 e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\tevil", ".GIT/config", ".git /hooks/x", "a/Git~1/x",
    "\uff0e\uff0e/x", "a/.gi\u200bt/config", "a/../../x", "tab\there", "a\\b", "x" * 300,
])
def test_commit_paths_refused(path: str) -> None:
    with pytest.raises(BadRequest):
        commits.clean_path(path)


@pytest.mark.parametrize("path", ["app.py", "中文/模型说明.md", "data/\uff46\uff55\uff4c\uff4c.txt", "a/.gitattributes", "v1.0./x"])
def test_commit_paths_accepted(path: str) -> None:
    assert commits.clean_path(path) == path


def test_tree_is_built_without_a_text_protocol(tmp_path: Path) -> None:
    """Even a path that slipped past validation cannot add tree entries: records are NUL-separated."""
    repo = tmp_path / "demo.git"
    storage.init_bare(repo)
    blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=b"x", capture_output=True,
                          check=True).stdout.decode().strip()
    entries = {f"a\n120000 {blob}\tlink": commits.Entry("100644", blob)}
    tree = commits._write_tree(repo, entries)
    listing = subprocess.run(["git", "-C", str(repo), "ls-tree", "-z", tree], capture_output=True, check=True).stdout
    assert listing.count(b"\0") == 1 and b"120000" not in listing.split(b"\t")[0]


def test_commit_api_refuses_newline_path(server: LiveServer, people: dict[str, Identity]) -> None:
    alice = people["alice"]
    created = httpx.post(f"{server.url}/api/repos/create", headers=alice.headers, timeout=30,
                         json={"type": "space", "name": "paths", "sdk": "static"})
    assert created.status_code == 200, created.text
    bad = "index.html\n120000 e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\tlink"
    lines = [{"key": "header", "value": {"summary": "x", "description": ""}},
             {"key": "file", "value": {"path": bad, "content": base64.b64encode(b"hi").decode(), "encoding": "base64"}}]
    response = httpx.post(f"{server.url}/api/spaces/alice/paths/commit/main", headers={**alice.headers,
                          "Content-Type": "application/x-ndjson"}, timeout=30,
                          content=b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    assert response.status_code == 400 and "control characters" in response.text, response.text


# ----------------------------------------------------------------------------- front matter bombs

def test_alias_bomb_is_a_config_error() -> None:
    with pytest.raises(SpaceConfigError) as refused:
        parse_front_matter(BOMB)
    assert refused.value.stage == CONFIG_ERROR and "anchors and aliases" in str(refused.value)


def test_modest_anchors_still_work() -> None:
    meta = parse_front_matter("---\nsdk: gradio\nbase: &b {k: 1}\nagain: *b\n---\n")
    assert meta["again"] == {"k": 1}


def test_alias_bomb_push_keeps_card_small(server: LiveServer, people: dict[str, Identity], tmp_path: Path) -> None:
    alice = people["alice"]
    repo = make_repo(tmp_path / "bomb", {"README.md": BOMB, "index.html": "x"})
    git(repo, "push", "-q", remote(server.url, "alice", "bomb", "alice", str(alice.token)), "main")
    listing = httpx.get(f"{server.url}/api/spaces", params={"author": "alice", "full": "true"}, timeout=30)
    assert listing.status_code == 200 and len(listing.content) < 100_000, len(listing.content)


def test_serve_logs_its_security_posture(server: LiveServer) -> None:
    logs = server.logs()
    for topic in ("apps:", "builds:", "app origin:", "egress:"):
        assert f"Security posture: OK {topic}" in logs, logs[-2000:]
