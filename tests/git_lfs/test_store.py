"""The per-owner object store and exports: objects are whole or absent, shared by link, and exports hold
the real files (pointers whose object is missing are reported, not guessed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from controller.domain.lfs import Pointer
from controller.git import lfs, storage
from tests.git_lfs.helpers import blob, sha256
from tests.support.gitrepo import git


def store_with(root: Path, data: bytes) -> tuple[lfs.ObjectStore, Pointer]:
    store = lfs.ObjectStore(root)
    fd, tmp = store.temp_file()
    os.write(fd, data)
    os.close(fd)
    pointer = Pointer(sha256(data), len(data))
    store.publish(tmp, pointer.oid)
    return store, pointer


def test_has_checks_size_and_link_shares_the_inode(tmp_path: Path) -> None:
    data = blob("store", 5000)
    alice, pointer = store_with(tmp_path / "alice" / "lfs", data)
    assert alice.has(pointer) and not alice.has(Pointer(pointer.oid, pointer.size + 1))
    bob = lfs.ObjectStore(tmp_path / "bob" / "lfs")
    assert bob.link_from(alice, pointer) and bob.has(pointer)
    assert os.stat(bob.path(pointer.oid)).st_ino == os.stat(alice.path(pointer.oid)).st_ino
    assert not bob.link_from(alice, pointer)  # already there


def test_stale_upload_temp_files_are_swept(tmp_path: Path) -> None:
    store = lfs.ObjectStore(tmp_path / "lfs")
    fd, old = store.temp_file()
    os.close(fd)
    os.utime(old, (time.time() - 2 * lfs.STALE_UPLOAD_SECONDS,) * 2)
    fd, fresh = store.temp_file()
    os.close(fd)
    assert not old.exists() and fresh.exists()


def test_export_replaces_pointers_by_objects_and_keeps_modes(tmp_path: Path) -> None:
    data, ghost = blob("export", 3000), blob("ghost", 10)
    bare = tmp_path / "repos" / "alice" / "app.git"
    storage.init_bare(bare)
    store_with(bare.parent / "lfs", data)
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    for name, content in (("run.bin", data), ("ghost.bin", ghost)):
        (work / name).write_bytes(Pointer(sha256(content), len(content)).text())
    (work / "run.bin").chmod(0o755)
    (work / "plain.txt").write_text("version 2 of the notes\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "pointers")
    git(work, "push", "-q", str(bare), "main")
    dest = tmp_path / "export"
    storage.export_tree(bare, storage.head_sha(bare) or "", dest)
    assert (dest / "run.bin").read_bytes() == data and os.access(dest / "run.bin", os.X_OK)
    assert (dest / "ghost.bin").read_bytes().startswith(b"version https://git-lfs")  # no object: left as is
    assert (dest / "plain.txt").read_text() == "version 2 of the notes\n"
    assert storage.read_file(bare, storage.head_sha(bare) or "", "run.bin") == data
