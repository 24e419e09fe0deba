"""The commit service on a real bare repo: plumbing, validation, and compare-and-swap under concurrency."""

from __future__ import annotations

import base64
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from controller.domain.errors import BadRequest
from controller.git import storage
from controller.services import commits

AUTHOR = commits.Author("Ada", "ada@example.com")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repos" / "ada" / "demo.git"
    storage.init_bare(path)
    return path


def body(summary: str, *ops: dict[str, object], parent: str | None = None) -> bytes:
    header: dict[str, object] = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    lines = [{"key": "header", "value": header}, *ops]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def add(path: str, data: bytes) -> dict[str, object]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def commit(repo: Path, summary: str, *ops: dict[str, object], parent: str | None = None) -> str:
    return commits.write_commit(repo, commits.parse_ndjson(body(summary, *ops, parent=parent)), AUTHOR)


def test_commit_writes_tree_author_and_message(repo: Path) -> None:
    sha = commit(repo, "first", add("app.py", b"print(1)\n"), add("lib/util.py", b"x = 1\n"))
    assert storage.head_sha(repo) == sha
    assert storage.list_files(repo, sha) == ["app.py", "lib/util.py"]
    assert storage.read_file(repo, sha, "lib/util.py") == b"x = 1\n"
    show = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%an <%ae>|%s"], capture_output=True, text=True)
    assert show.stdout.strip() == "Ada <ada@example.com>|first"


def test_deletes_and_folder_deletes(repo: Path) -> None:
    commit(repo, "one", add("a.txt", b"a"), add("d/x.txt", b"x"), add("d/e/y.txt", b"y"))
    folder: dict[str, object] = {"key": "deletedFolder", "value": {"path": "d/"}}
    file: dict[str, object] = {"key": "deletedFile", "value": {"path": "a.txt"}}
    second = commit(repo, "two", folder, file, add("b.txt", b"b"))
    assert storage.list_files(repo, second) == ["b.txt"]
    with pytest.raises(commits.EntryNotFound):
        commit(repo, "three", file)


@pytest.mark.parametrize("path", ["../escape", ".git/config", "a/../../b", "", "/"])
def test_bad_paths_are_refused(repo: Path, path: str) -> None:
    with pytest.raises(BadRequest):
        commit(repo, "bad", add(path, b"x"))
    assert storage.head_sha(repo) is None


def test_file_folder_clash_and_lfs_without_object_are_refused(repo: Path) -> None:
    commit(repo, "one", add("a", b"file"))
    with pytest.raises(BadRequest, match="is a file"):
        commit(repo, "two", add("a/b", b"x"))
    lfs: dict[str, object] = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64, "size": 1}}
    with pytest.raises(commits.LfsObjectMissing, match=r"w\.bin: its Git LFS object .* was never uploaded"):
        commit(repo, "three", lfs)


def test_stale_parent_is_a_precondition_failure(repo: Path) -> None:
    first = commit(repo, "one", add("a", b"1"))
    commit(repo, "two", add("a", b"2"), parent=first)
    with pytest.raises(commits.PreconditionFailed):
        commit(repo, "three", add("a", b"3"), parent=first)


def test_concurrent_commits_lose_nothing(repo: Path) -> None:
    commit(repo, "base", add("base.txt", b"base"))

    def worker(i: int) -> list[str]:
        return [commit(repo, f"w{i}-{j}", add(f"w{i}/{j}.txt", f"{i}-{j}".encode())) for j in range(4)]

    with ThreadPoolExecutor(8) as pool:
        shas = [sha for batch in pool.map(worker, range(8)) for sha in batch]
    head = storage.head_sha(repo)
    assert head is not None
    files = set(storage.list_files(repo, head))
    assert files == {"base.txt", *(f"w{i}/{j}.txt" for i in range(8) for j in range(4))}
    assert set(shas) <= {c["id"] for c in commits.log(repo, head, 0, 100)}


def test_reads_tree_blob_log_and_upload_modes(repo: Path) -> None:
    sha = commit(repo, "one", add("README.md", b"# hi\n"), add("src/app.py", b"pass\n"))
    top = commits.tree(repo, sha, "", recursive=False)
    assert {(e["type"], e["path"]) for e in top} == {("file", "README.md"), ("directory", "src")}
    deep = commits.tree(repo, sha, "src", recursive=True)
    assert [(e["path"], e["size"]) for e in deep] == [("src/app.py", 5)]
    blob_sha, data = commits.blob(repo, sha, "src/app.py")
    assert data == b"pass\n" and len(blob_sha) == 40
    with pytest.raises(commits.EntryNotFound):
        commits.blob(repo, sha, "src")
    modes = commits.upload_modes(repo, "main", [{"path": "src/app.py", "size": 5}, {"path": "new.txt", "size": 3}])
    assert modes[0]["oid"] == blob_sha and modes[1]["oid"] is None
    assert {m["uploadMode"] for m in modes} == {"regular"}
    with pytest.raises(commits.RevisionNotFound):
        commits.resolve(repo, "nope")
    with pytest.raises(commits.RevisionNotFound):
        commits.resolve(repo, "--output=/tmp/x")
    assert commits.log(repo, sha, 0, 10)[0]["title"] == "one"
