"""Per-owner repository storage limits (issue 19): an ordinary account cannot fill the disk with pushes,
commits or duplicates, however it spreads them over spaces.

In-process: the measurement (like `du`, quarantine included, hard links once), the messages, the commit API
writing nothing when refused. Live (`spaceport serve` with a 1 MiB limit, starts in seconds): git push under
and over the limit (refused by the pre-receive hook, `remote:` message, head and objects unchanged), an
owner already full refused before it sends anything, data spread over several spaces counted in total,
huggingface_hub uploads, duplicate, and another owner unaffected throughout.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from controller.domain.units import format_bytes
from controller.git import quota, storage
from controller.git.quota import StorageLimitExceeded, StorageLimits
from controller.services import commits
from tests.security import Identity
from tests.support.gitrepo import git, make_repo, remote
from tests.support.server import LiveServer, make_server

LIMIT = 1 << 20  # the live server's SPACEPORT_MAX_OWNER_REPO_BYTES
KB = 1024
AUTHOR = commits.Author("Test", "test@example.com")


def random_bytes(n: int) -> bytes:
    return os.urandom(n)  # incompressible: stored on disk at about its own size


def objects(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in (repo / "objects").rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- measurement and messages

def test_disk_usage_matches_du_counts_hard_links_once_and_follows_no_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "owner"
    (root / "a.git" / "objects" / "incoming-x").mkdir(parents=True)
    (root / "a.git" / "objects" / "incoming-x" / "pack").write_bytes(random_bytes(300 * KB))  # a push in progress
    (root / "a.git" / "HEAD").write_text("ref: refs/heads/main\n")
    os.link(root / "a.git" / "HEAD", root / "a.git" / "HEAD-link")
    outside = tmp_path / "outside"
    outside.write_bytes(random_bytes(2 << 20))
    (root / "a.git" / "elsewhere").symlink_to(outside)
    du = int(subprocess.run(["du", "-s", "-B1", str(root)], capture_output=True, text=True, check=True).stdout.split()[0])
    assert quota.disk_usage(root) == du - root.lstat().st_blocks * 512  # du also counts root itself
    assert 300 * KB <= quota.disk_usage(root) < 400 * KB
    assert quota.disk_usage(tmp_path / "missing") == 0


def test_messages_name_the_usage_the_limit_and_the_setting(tmp_path: Path) -> None:
    repo = tmp_path / "repos" / "alice" / "big.git"
    (repo / "objects").mkdir(parents=True)
    (repo / "objects" / "blob").write_bytes(random_bytes(200 * KB))
    with pytest.raises(StorageLimitExceeded) as owner:
        quota.check_room(StorageLimits(owner_bytes=100 * KB), repo)
    assert owner.value.status == 413
    assert owner.value.message.startswith("owner alice stores 2")  # 200 KiB plus the directories' blocks
    assert "of repositories, the limit is 100 KiB (SPACEPORT_MAX_OWNER_REPO_BYTES): delete spaces" in owner.value.message
    with pytest.raises(StorageLimitExceeded) as space:
        quota.check(StorageLimits(repo_bytes=1 << 20), repo, 900 * KB, "this commit")
    assert "space alice/big stores" in space.value.message and "and this commit adds 900 KiB" in space.value.message
    assert "the limit per space is 1 MiB (SPACEPORT_MAX_REPO_BYTES)" in space.value.message
    quota.check(StorageLimits(owner_bytes=0, repo_bytes=0), repo, 1 << 40, "this commit")  # 0: no limit
    quota.check(StorageLimits(owner_bytes=1 << 20), repo, 100 * KB, "this commit")  # fits
    assert format_bytes(10 * (1 << 30) + (1 << 28)) == "10.2 GiB" and format_bytes(1 << 30) == "1 GiB"


def test_commit_api_over_the_limit_writes_nothing_and_other_owners_are_unaffected(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    alice, bob = storage.repo_path(repos, "alice", "site"), storage.repo_path(repos, "bob", "site")
    storage.init_bare(alice)
    storage.init_bare(bob)
    first = commits.write_commit(alice, commits.CommitRequest("one", ops=[("file", "a.bin", random_bytes(100 * KB))]),
                                 AUTHOR, limits=StorageLimits(owner_bytes=400 * KB))
    limits = StorageLimits(owner_bytes=quota.disk_usage(alice.parent) + 100 * KB)
    before = objects(alice)
    big = commits.CommitRequest("two", ops=[("file", "b.bin", random_bytes(150 * KB))])
    with pytest.raises(StorageLimitExceeded, match=r"owner alice stores .* and this commit adds 150 KiB"):
        commits.write_commit(alice, big, AUTHOR, limits=limits)
    assert storage.head_sha(alice) == first and objects(alice) == before  # no blob, tree or commit kept
    with pytest.raises(StorageLimitExceeded, match="this upload adds 150 KiB"):
        commits.upload_modes(alice, "main", [{"path": "b.bin", "size": 150 * KB}], limits)
    small = commits.write_commit(alice, commits.CommitRequest("small", ops=[("file", "c.txt", b"fits")]), AUTHOR,
                                 limits=limits)
    assert storage.head_sha(alice) == small
    assert commits.write_commit(bob, big, AUTHOR, limits=limits)  # bob's namespace is measured on its own


def test_parallel_commits_to_several_spaces_cannot_share_the_same_free_room(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    targets = [storage.repo_path(repos, "alice", f"s{i}") for i in range(4)]
    for repo in targets:
        storage.init_bare(repo)
    limits = StorageLimits(owner_bytes=quota.disk_usage(repos / "alice") + 3 * (1 << 20))  # room for one 2 MiB file
    start = threading.Barrier(len(targets))

    def upload(repo: Path) -> str:
        start.wait()
        try:
            return commits.write_commit(repo, commits.CommitRequest("big", ops=[("file", "w.bin", random_bytes(2 << 20))]),
                                        AUTHOR, limits=limits)
        except StorageLimitExceeded:
            return "refused"

    with ThreadPoolExecutor(len(targets)) as pool:
        results = list(pool.map(upload, targets))
    assert results.count("refused") == len(targets) - 1, results  # each checked after the previous one wrote
    assert quota.disk_usage(repos / "alice") <= limits.owner_bytes


# ----------------------------------------------------------------------------- live: git push, hub, duplicate

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("storage"), SPACEPORT_MAX_OWNER_REPO_BYTES=str(LIMIT)).start()
    yield srv
    srv.stop(remove_apps=False)  # no space here has an app file: nothing runs


@pytest.fixture(scope="module")
def people(server: LiveServer) -> dict[str, Identity]:
    return {name: Identity(name, server.create_user(name)) for name in ("alice", "bob", "carol")}


def usage(server: LiveServer, owner: str) -> int:
    return quota.disk_usage(server.data_dir / "repos" / owner)


def server_repo(server: LiveServer, owner: str, name: str) -> Path:
    return server.data_dir / "repos" / owner / f"{name}.git"


def push_bytes(server: LiveServer, who: Identity, tmp: Path, name: str, size: int,
               work: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Push a commit adding `size` random bytes (no README: nothing to build) to who's space `name`."""
    if work is None:
        work = make_repo(tmp / f"{name}-{size}", {"notes.txt": name})
    (work / f"data-{size}.bin").write_bytes(random_bytes(size))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"add {size} bytes")
    return git(work, "push", remote(server.url, who.name, name, who.name, who.token), "main", check=False)


def test_push_under_the_limit_works_and_one_over_it_is_refused_with_nothing_kept(
        server: LiveServer, people: dict[str, Identity], tmp_path: Path) -> None:
    alice = people["alice"]
    work = make_repo(tmp_path / "one", {"notes.txt": "one"})
    ok = push_bytes(server, alice, tmp_path, "one", 300 * KB, work)
    assert ok.returncode == 0, ok.stderr
    head = git(work, "rev-parse", "HEAD").stdout.strip()
    assert storage.head_sha(server_repo(server, "alice", "one")) == head
    before = objects(server_repo(server, "alice", "one"))
    (server_repo(server, "alice", "one") / "hooks" / "pre-receive").unlink()  # Spaceport's own hooks run anyway

    refused = push_bytes(server, alice, tmp_path, "one", 800 * KB, work)
    assert refused.returncode != 0
    assert "remote: Spaceport refuses this push: owner alice would store" in refused.stderr, refused.stderr
    assert "the limit is 1 MiB (SPACEPORT_MAX_OWNER_REPO_BYTES): delete spaces" in refused.stderr
    assert "pre-receive hook declined" in refused.stderr
    repo = server_repo(server, "alice", "one")
    assert storage.head_sha(repo) == head  # the server still shows the old head
    assert objects(repo) == before  # the refused push's quarantined objects were dropped
    assert usage(server, "alice") < LIMIT


def test_data_spread_over_several_spaces_counts_in_total(server: LiveServer, people: dict[str, Identity],
                                                         tmp_path: Path) -> None:
    alice = people["alice"]
    room = LIMIT - usage(server, "alice")
    first = push_bytes(server, alice, tmp_path, "spread-1", room // 2)
    assert first.returncode == 0, first.stderr
    second = push_bytes(server, alice, tmp_path, "spread-2", room // 2)  # each fits alone, not both together
    assert second.returncode != 0 and "owner alice would store" in second.stderr, second.stderr
    assert storage.head_sha(server_repo(server, "alice", "spread-2")) is None
    assert usage(server, "alice") <= LIMIT


def test_hub_uploads_over_the_limit_are_refused_with_the_message(server: LiveServer, people: dict[str, Identity]) -> None:
    hf = HfApi(endpoint=server.url, token=people["alice"].token)
    hf.create_repo("alice/hub", repo_type="space", space_sdk="static")
    head = hf.space_info("alice/hub").sha
    room = LIMIT - usage(server, "alice")
    with pytest.raises(HfHubHTTPError) as refused:
        hf.upload_file(path_or_fileobj=random_bytes(room + 50 * KB), path_in_repo="big.bin", repo_id="alice/hub",
                       repo_type="space")
    response = refused.value.response
    assert response is not None and response.status_code == 413
    assert "owner alice stores" in str(refused.value) and "this upload adds" in str(refused.value)  # preupload
    assert "SPACEPORT_MAX_OWNER_REPO_BYTES" in str(refused.value)
    assert hf.space_info("alice/hub").sha == head
    assert usage(server, "alice") < LIMIT
    raw = _raw_commit(server, people["alice"], "alice/hub", room + 50 * KB)  # a client skipping preupload
    assert raw.status_code == 413 and "and this commit adds" in raw.json()["error"], raw.text
    assert hf.space_info("alice/hub").sha == head
    hf.upload_file(path_or_fileobj=b"small", path_in_repo="small.txt", repo_id="alice/hub", repo_type="space")
    assert hf.space_info("alice/hub").sha != head  # under the limit uploads work


def _raw_commit(server: LiveServer, who: Identity, repo_id: str, size: int) -> httpx.Response:
    lines = [{"key": "header", "value": {"summary": "big"}},
             {"key": "file", "value": {"path": "raw.bin", "content": base64.b64encode(random_bytes(size)).decode(),
                                       "encoding": "base64"}}]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    return httpx.post(f"{server.url}/api/spaces/{repo_id}/commit/main", content=body, timeout=60,
                      headers={**who.headers, "Content-Type": "application/x-ndjson"})


def test_owner_already_full_is_refused_before_sending_and_others_are_unaffected(
        server: LiveServer, people: dict[str, Identity], tmp_path: Path) -> None:
    filler = server.data_dir / "repos" / "alice" / "filler"  # e.g. the admin lowered the limit meanwhile
    filler.write_bytes(random_bytes(LIMIT))
    try:
        refused = push_bytes(server, people["alice"], tmp_path, "late", 1 * KB)
        assert refused.returncode != 0
        assert "remote: owner alice stores" in refused.stderr and "413" in refused.stderr, refused.stderr
        assert "pre-receive" not in refused.stderr  # refused at discovery: no pack was sent
        missing = httpx.get(f"{server.url}/api/spaces/alice/late", headers=people["alice"].headers, timeout=30)
        assert missing.status_code == 404  # and no space was created for it
        bob = push_bytes(server, people["bob"], tmp_path, "mine", 600 * KB)
        assert bob.returncode == 0, bob.stderr
    finally:
        filler.unlink()


def test_duplicate_into_a_namespace_without_room_is_refused_and_keeps_nothing(
        server: LiveServer, people: dict[str, Identity], tmp_path: Path) -> None:
    carol = people["carol"]
    hf = HfApi(endpoint=server.url, token=carol.token)
    assert push_bytes(server, carol, tmp_path, "tiny", 1 * KB).returncode == 0
    hf.duplicate_repo("carol/tiny", to_id="carol/tiny-copy", repo_type="space")  # with room it copies
    assert storage.head_sha(server_repo(server, "carol", "tiny-copy")) == storage.head_sha(server_repo(server, "carol", "tiny"))
    pushed = push_bytes(server, carol, tmp_path, "half", 600 * KB)  # a second copy would not fit
    assert pushed.returncode == 0, pushed.stderr
    with pytest.raises(HfHubHTTPError) as refused:
        hf.duplicate_repo("carol/half", to_id="carol/half-copy", repo_type="space")
    assert refused.value.response is not None and refused.value.response.status_code == 413
    assert "owner carol stores" in str(refused.value) and "and the duplicate adds" in str(refused.value)
    assert not server_repo(server, "carol", "half-copy").exists()
    missing = httpx.get(f"{server.url}/api/spaces/carol/half-copy", headers=carol.headers, timeout=30)
    assert missing.status_code == 404
    assert usage(server, "carol") < LIMIT
