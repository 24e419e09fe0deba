"""Abuse resistance (issue 19), tried as an ordinary user or anonymously: each case was accepted before.

* an admin's read token may look, never change (quotas, inventory, sleep policy);
* git gives one answer for "missing" and "private and not yours" (no existence oracle);
* commit paths are checked like git's verify_path: no newline injection into tree building, no `.git`
  in any spelling, no Unicode look-alikes of `..`;
* a README front matter alias bomb is refused with a CONFIG_ERROR instead of expanding;
* 200 open log streams hold no database connection (the API keeps answering) and one more gets 429;
* big and deep bodies are refused (413 / 400) before they are buffered; a 50 MB download streams;
* platform pages and API refuse to be framed, apps (on their host URL, in the space page's iframe) do not;
* `sleepTimeSeconds: 1` is refused on create and duplicate like on the sleep-time API.
(In-process checks of the same limits, sessions and login throttling: test_limits.py.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from builder.errors import CONFIG_ERROR, SpaceConfigError
from builder.spaceconfig import parse_front_matter
from controller.domain.errors import BadRequest
from controller.git import storage
from controller.services import commits
from tests.security import Identity, host_get, static_files
from tests.support.gitrepo import git, make_repo, remote
from tests.support.server import LiveServer, make_server
from tests.support.spaces import wait_stage

STREAMS = 200  # the site's per-client cap here (default 20): all 200 come from 127.0.0.1
STATIC = {"README.md": "---\nsdk: static\n---\n", "index.html": "<h1>hi</h1>"}
BOMB = ("---\nsdk: static\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n---\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("abuse"), SPACEPORT_STREAMS_PER_CLIENT=str(STREAMS),
                      SPACEPORT_STREAMS_PER_SPACE=str(STREAMS + 50)).start()
    yield srv
    srv.close()


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


# ----------------------------------------------------------------------------- log streams


@pytest.fixture(scope="module")
def running(server: LiveServer, people: dict[str, Identity], tmp_path_factory: pytest.TempPathFactory) -> str:
    """alice/tail: a static app that is RUNNING, so its run log streams stay open."""
    repo = make_repo(tmp_path_factory.mktemp("tail") / "app", static_files("<h1>tail</h1>"))
    git(repo, "push", "-q", remote(server.url, "alice", "tail", "alice", str(people["alice"].token)), "main")
    wait_stage(server, "alice/tail", {"RUNNING"}, timeout=240)
    return "alice/tail"


async def _open_streams(url: str, count: int) -> tuple[aiohttp.ClientSession, list[aiohttp.ClientResponse]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))
    streams = await asyncio.gather(*(session.get(url) for _ in range(count)))
    return session, list(streams)


async def _api_calls(server: LiveServer, alice: Identity, space: str) -> list[tuple[str, int]]:
    paths = ["/api/spaces", f"/api/spaces/{space}", f"/api/spaces/{space}/runtime", "/api/whoami-v2",
             f"/spaces/{space}", "/healthz", f"/api/spaces/{space}/tree/main"]
    async with httpx.AsyncClient(base_url=server.url, headers=alice.headers, timeout=60) as client:
        answers = await asyncio.gather(*(client.get(p) for p in paths * 6))
    return [(str(a.request.url), a.status_code) for a in answers]


def test_200_open_log_streams_do_not_starve_the_site(server: LiveServer, people: dict[str, Identity],
                                                     running: str) -> None:
    url = f"{server.url}/api/spaces/{running}/logs/run?follow=true"

    async def scenario() -> None:
        session, streams = await _open_streams(url, STREAMS)
        try:
            assert [r.status for r in streams] == [200] * STREAMS
            assert all(r.headers["content-type"].startswith("text/event-stream") for r in streams)
            one_more = await session.get(url)
            assert one_more.status == 429 and int(one_more.headers["Retry-After"]) > 0
            assert "SPACEPORT_STREAMS_PER_CLIENT" in (await one_more.json())["error"]
            answers = await _api_calls(server, people["alice"], running)  # 42 calls while 200 streams are open
            assert [a for a in answers if a[1] != 200] == [], answers
        finally:
            for r in streams:
                r.close()
            await session.close()

    asyncio.run(scenario())
    assert _stream_admitted_again(url), "closed streams never gave their slots back"
    assert "QueuePool limit" not in server.logs()


def _stream_admitted_again(url: str) -> bool:
    """Every slot is back once the server has seen the 200 disconnects: 200 new streams are admitted."""
    deadline, pause = time.monotonic() + 90, 0.5
    while time.monotonic() < deadline:
        async def probe() -> list[int]:
            session, streams = await _open_streams(url, STREAMS)
            codes = [r.status for r in streams]
            for r in streams:
                r.close()
            await session.close()
            return codes

        if asyncio.run(probe()) == [200] * STREAMS:
            return True
        # a failed probe holds its own admitted streams until the server has seen them close: back off so a
        # probe does not meet the last one's (behind HAProxy without abortonclose that took 25-30 s, the
        # log stream's keepalive, and this test failed)
        time.sleep(pause)
        pause = min(pause * 2, 16)
    return False


# ----------------------------------------------------------------------------- frames


def test_platform_refuses_framing_apps_do_not(server: LiveServer, people: dict[str, Identity], running: str) -> None:
    for path in ("/login", "/", f"/spaces/{running}", "/api/spaces", "/api/spaces/no/such", "/settings/tokens"):
        answer = httpx.get(server.url + path, timeout=30)
        assert answer.headers.get("x-frame-options") == "DENY", path
        assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", ""), path
    app = host_get(server, "alice-tail")
    assert app.status_code == 200 and "tail" in app.text
    assert "x-frame-options" not in app.headers and "frame-ancestors" not in app.headers.get("content-security-policy", "")
    page = httpx.get(f"{server.url}/spaces/{running}", timeout=30).text
    assert re.search(r'<iframe[^>]+src="http://alice-tail\.localhost:\d+/', page), page[:3000]


# ----------------------------------------------------------------------------- bodies and downloads


def test_big_anonymous_bodies_are_refused_unread(server: LiveServer) -> None:
    big = b"content: " + b"x" * (3 << 20)
    refused = httpx.post(f"{server.url}/api/validate-yaml", content=big, timeout=30,
                         headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "SPACEPORT_MAX_BODY_BYTES" in refused.text, refused.text

    def chunked() -> Iterator[bytes]:
        for _ in range(300):
            yield b"y" * 10_000

    streamed = httpx.post(f"{server.url}/api/validate-yaml", content=chunked(), timeout=30,
                          headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "1 MiB" in streamed.text, streamed.text
    login = httpx.post(f"{server.url}/login", content=b"username=" + b"a" * (2 << 20), timeout=30,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert login.status_code == 413


def test_deep_json_and_ndjson_are_client_errors(server: LiveServer, people: dict[str, Identity]) -> None:
    alice = people["alice"]
    nested = '{"type": "space", "name": "deep", "cardData": ' + "[" * 1000 + "]" * 1000 + "}"
    refused = httpx.post(f"{server.url}/api/repos/create", content=nested, timeout=30,
                         headers={**alice.headers, "content-type": "application/json"})
    assert refused.status_code == 400 and "nested more than" in refused.text, refused.text
    created = httpx.post(f"{server.url}/api/repos/create", headers=alice.headers, timeout=30,
                         json={"type": "space", "name": "deep-commit", "sdk": "static"})
    assert created.status_code == 200, created.text
    line = json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + "[" * 1000 + "]" * 1000 + "\n"
    commit = httpx.post(f"{server.url}/api/spaces/alice/deep-commit/commit/main", content=line, timeout=30,
                        headers={**alice.headers, "content-type": "application/x-ndjson"})
    assert commit.status_code == 400 and "line 2 is nested more than" in commit.text, commit.text


def test_sleep_time_below_a_minute_is_refused_on_create_and_duplicate(server: LiveServer,
                                                                      people: dict[str, Identity]) -> None:
    alice = people["alice"]
    create = httpx.post(f"{server.url}/api/repos/create", headers=alice.headers, timeout=30,
                        json={"type": "space", "name": "sleepy", "sdk": "static", "sleepTimeSeconds": 1})
    assert create.status_code == 400 and "at least 60 seconds" in create.text, create.text
    assert httpx.get(f"{server.url}/api/spaces/alice/sleepy", timeout=30).status_code == 404  # nothing half-made
    ok = httpx.post(f"{server.url}/api/repos/create", headers=alice.headers, timeout=30,
                    json={"type": "space", "name": "sleepy", "sdk": "static", "sleepTimeSeconds": 300})
    assert ok.status_code == 200, ok.text
    dup = httpx.post(f"{server.url}/api/spaces/alice/sleepy/duplicate", headers=people["bob"].headers, timeout=30,
                     json={"repository": "bob/sleepy", "sleepTimeSeconds": 1})
    assert dup.status_code == 400 and "at least 60 seconds" in dup.text, dup.text
    assert httpx.get(f"{server.url}/api/spaces/bob/sleepy", timeout=30).status_code == 404


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_50_mb_download_streams_from_git(server: LiveServer, people: dict[str, Identity], tmp_path: Path) -> None:
    data = os.urandom(50 << 20)
    repo = make_repo(tmp_path / "big", {"README.md": "---\nsdk: static\n---\n"})
    (repo / "weights.bin").write_bytes(data)
    git(repo, "add", "weights.bin")
    git(repo, "commit", "-q", "-m", "weights")
    git(repo, "push", "-q", remote(server.url, "alice", "big", "alice", str(people["alice"].token)), "main")
    url = f"{server.url}/spaces/alice/big/resolve/main/weights.bin"
    assert httpx.get(url.replace("weights.bin", "README.md"), timeout=30).status_code == 200  # warm the code path
    assert server.proc is not None
    before = peak = _rss_kb(server.proc.pid)
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-length"] == str(len(data))
        for chunk in response.iter_bytes(1 << 20):
            digest.update(chunk)
            peak = max(peak, _rss_kb(server.proc.pid))
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    growth_mb = (peak - before) / 1024
    print(f"server RSS growth while streaming 50 MB: {growth_mb:.1f} MB")
    assert growth_mb < 30, growth_mb
    head = httpx.head(url, timeout=30)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
