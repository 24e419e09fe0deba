"""What a space owner, a reader or a stranger might try against Git LFS: lie about an upload's hash or
size, tamper with signed links, upload without write access, read another space's objects by their hash,
push pointers to objects never uploaded, pass the storage limit. Each is refused and leaves nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from huggingface_hub import HfApi

from tests.git_lfs.helpers import blob, lfs_repo, pointer_repo, sha256, stored_objects, temp_files
from tests.hub.conftest import reap
from tests.support.gitrepo import git, push, remote
from tests.support.server import LiveServer, make_server

README = b"---\ntitle: LFS attack\nsdk: static\n---\n"
MEDIA = "application/vnd.git-lfs+json"


def batch(server: LiveServer, space: str, operation: str, objects: list[dict[str, object]],
          token: str | None = None) -> httpx.Response:
    headers = {"Accept": MEDIA, "Content-Type": MEDIA, **({"Authorization": f"Bearer {token}"} if token else {})}
    body = {"operation": operation, "transfers": ["basic"], "objects": objects, "hash_algo": "sha256"}
    return httpx.post(f"{server.url}/spaces/{space}.git/info/lfs/objects/batch", json=body, headers=headers, timeout=30)


def obj(data: bytes) -> dict[str, object]:
    return {"oid": sha256(data), "size": len(data)}


def space_exists(server: LiveServer, space: str, token: str) -> bool:
    got = httpx.get(f"{server.url}/api/spaces/{space}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return got.status_code == 200


def upload_action(server: LiveServer, space: str, data: bytes, token: str) -> dict[str, dict[str, str]]:
    answer = batch(server, space, "upload", [obj(data)], token)
    assert answer.status_code == 200, answer.text
    actions: dict[str, dict[str, str]] = answer.json()["objects"][0]["actions"]
    return actions


def test_upload_with_wrong_hash_or_size_is_refused_and_nothing_stored(server: LiveServer, tokens: dict[str, str],
                                                                      tmp_path: Path) -> None:
    push(lfs_repo(tmp_path / "w", {"README.md": README}), remote(server.url, "alice", "liar", "alice", tokens["alice"]))
    claimed, before = blob("claimed", 50_000), stored_objects(server.data_dir, "alice")
    actions = upload_action(server, "alice/liar", claimed, tokens["alice"])
    for body in (blob("other", 50_000), claimed + b"more", claimed[:-1]):  # wrong hash, too long, too short
        put = httpx.put(actions["upload"]["href"], content=body, timeout=30)
        assert put.status_code == 400 and ("sha256" in put.json()["message"] or "bytes" in put.json()["message"])
    verify = httpx.post(actions["verify"]["href"], json=obj(claimed), timeout=30)
    assert verify.status_code == 404
    assert stored_objects(server.data_dir, "alice") == before and temp_files(server.data_dir, "alice") == []
    assert httpx.put(actions["upload"]["href"], content=claimed, timeout=30).status_code == 200  # the truth works
    assert httpx.post(actions["verify"]["href"], json=obj(claimed), timeout=30).status_code == 200


def test_tampered_links_are_refused(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    push(lfs_repo(tmp_path / "w", {"README.md": README}), remote(server.url, "alice", "links", "alice", tokens["alice"]))
    data, other = blob("link", 1000), blob("swap", 2000)
    href = upload_action(server, "alice/links", data, tokens["alice"])["upload"]["href"]
    parts = urlsplit(href)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    bigger = f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode({**query, 'size': '2000'})}"
    swapped = href.replace(sha256(data), sha256(other))
    elsewhere = href.replace("/alice/links.git/", "/bob/links.git/")
    for link, body in ((bigger, other), (swapped, other), (elsewhere, data)):
        put = httpx.put(link, content=body, timeout=30)
        assert put.status_code == 403 and "signature" in put.json()["message"]
    stale = f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode({**query, 'expires': '1'})}"
    assert httpx.put(stale, content=data, timeout=30).status_code == 403


def test_uploading_needs_write_access(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    push(lfs_repo(tmp_path / "w", {"README.md": README}), remote(server.url, "alice", "guarded", "alice", tokens["alice"]))
    data = blob("intruder", 1000)
    anonymous = batch(server, "alice/guarded", "upload", [obj(data)])
    assert anonymous.status_code == 401 and "LFS-Authenticate" in anonymous.headers
    reader = batch(server, "alice/guarded", "upload", [obj(data)], tokens["bob"])  # may read, may not write
    assert reader.status_code == 403 and "may not push" in reader.json()["message"]
    squatter = batch(server, "alice/new-one", "upload", [obj(data)], tokens["bob"])  # alice's namespace
    assert squatter.status_code == 403
    assert batch(server, "alice/guarded", "download", [obj(data)], tokens["bob"]).status_code == 200  # reading is fine
    plain = httpx.post(f"{server.url}/spaces/alice/guarded/info/lfs/objects/batch", timeout=30,  # remote without .git
                       json={"operation": "download", "objects": [obj(data)]}, headers={"Accept": MEDIA})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith(MEDIA)
    malformed = batch(server, "alice/guarded", "upload", [{"oid": "../../etc/passwd", "size": 1}, {"oid": "a" * 64,
                                                                                                  "size": -5}],
                      tokens["alice"])
    assert [o["error"]["code"] for o in malformed.json()["objects"]] == [422, 422]


def test_objects_are_only_served_by_spaces_that_point_to_them(server: LiveServer, tokens: dict[str, str],
                                                              tmp_path: Path) -> None:
    """Objects are per owner, content-addressed; a space hands out only those its own history points to."""
    secret = blob("secret", 30_000)
    HfApi(endpoint=server.url, token=tokens["alice"]).create_repo("alice/vault", repo_type="space",
                                                                  space_sdk="static", private=True)
    private = lfs_repo(tmp_path / "private", {"README.md": README, "secret.bin": secret})
    push(private, remote(server.url, "alice", "vault", "alice", tokens["alice"]))
    push(lfs_repo(tmp_path / "public", {"README.md": README}), remote(server.url, "alice", "showcase", "alice",
                                                                        tokens["alice"]))
    push(lfs_repo(tmp_path / "own", {"README.md": README}), remote(server.url, "mallory", "own", "mallory",
                                                                    tokens["mallory"]))
    assert sha256(secret) in {p.name for p in stored_objects(server.data_dir, "alice")}
    via_public = batch(server, "alice/showcase", "download", [obj(secret)], tokens["mallory"])
    assert via_public.status_code == 200 and via_public.json()["objects"][0]["error"]["code"] == 404
    via_own = batch(server, "mallory/own", "download", [obj(secret)], tokens["mallory"])
    assert via_own.json()["objects"][0]["error"]["code"] == 404
    assert batch(server, "alice/vault", "download", [obj(secret)], tokens["mallory"]).status_code == 404  # hidden
    upload = batch(server, "mallory/own", "upload", [obj(secret)], tokens["mallory"])  # no "already stored" oracle
    assert "actions" in upload.json()["objects"][0]
    owner = batch(server, "alice/vault", "download", [obj(secret)], tokens["alice"])
    href = owner.json()["objects"][0]["actions"]["download"]["href"]
    assert httpx.get(href, timeout=30).content == secret
    assert httpx.get(href.replace("/alice/vault.git/", "/alice/showcase.git/"), timeout=30).status_code == 403


def test_push_of_pointer_without_object_is_refused_naming_the_file(server: LiveServer, tokens: dict[str, str],
                                                                    tmp_path: Path) -> None:
    ghost = blob("ghost", 4096)
    work = pointer_repo(tmp_path / "ghost", {"README.md": README.decode()}, {"weights/ghost.bin": ghost})
    # --no-verify: no git-lfs pre-push hook, as from a client without git-lfs (or one that lies)
    refused = git(work, "push", "--no-verify", remote(server.url, "alice", "ghost", "alice", tokens["alice"]), "main",
                  check=False)
    assert refused.returncode != 0
    assert "weights/ghost.bin" in refused.stderr and "never uploaded" in refused.stderr
    assert not space_exists(server, "alice/ghost", tokens["alice"])  # a failed first push creates nothing
    assert not (server.data_dir / "repos" / "alice" / "ghost.git").exists()
    # an existing space keeps its main
    good = lfs_repo(tmp_path / "good", {"README.md": README})
    push(good, remote(server.url, "alice", "haunted", "alice", tokens["alice"]))
    head = git(good, "rev-parse", "HEAD").stdout.strip()
    (tmp_path / "pointer").write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256(ghost)}\n"
                                      f"size {len(ghost)}\n")
    sha = git(good, "hash-object", "-w", "--no-filters", str(tmp_path / "pointer")).stdout.strip()
    git(good, "update-index", "--add", "--cacheinfo", f"100644,{sha},later.bin")  # the pointer as is, no clean filter
    git(good, "commit", "-q", "-m", "pointer only")
    again = git(good, "push", "--no-verify",
                remote(server.url, "alice", "haunted", "alice", tokens["alice"]), "main", check=False)
    assert again.returncode != 0 and "later.bin" in again.stderr
    bare = server.data_dir / "repos" / "alice" / "haunted.git"
    assert git(bare, "rev-parse", "main").stdout.strip() == head


def test_locks_api_is_refused_politely(server: LiveServer, tokens: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {tokens['alice']}", "Accept": MEDIA}
    verify = httpx.post(f"{server.url}/spaces/alice/liar.git/info/lfs/locks/verify", json={}, headers=headers)
    assert verify.status_code == 501 and "locking" in verify.json()["message"]
    assert httpx.get(f"{server.url}/spaces/alice/liar.git/info/lfs/locks", headers=headers).status_code == 501


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("lfs-quota"), SPACEPORT_MAX_OWNER_REPO_BYTES="400000").start()
    yield srv
    srv.close()
    reap(srv.data_dir)


def test_lfs_objects_count_against_the_owner_storage_limit(small_server: LiveServer, tmp_path: Path) -> None:
    token = small_server.create_user("carol")
    work = lfs_repo(tmp_path / "big", {"README.md": README, "huge.bin": blob("huge", 600_000)})
    refused = git(work, "push", remote(small_server.url, "carol", "big", "carol", token), "main", check=False)
    assert refused.returncode != 0 and "SPACEPORT_MAX_OWNER_REPO_BYTES" in refused.stderr, refused.stderr
    assert not space_exists(small_server, "carol/big", token)  # the aborted push left no space behind
    assert not (small_server.data_dir / "repos" / "carol" / "big.git").exists()
    assert stored_objects(small_server.data_dir, "carol") == []
    fits = lfs_repo(tmp_path / "fits", {"README.md": README, "ok.bin": blob("ok", 100_000)})
    push(fits, remote(small_server.url, "carol", "fits", "carol", token))
    assert len(stored_objects(small_server.data_dir, "carol")) == 1
