"""File downloads straight from git: a blob's size first, then its bytes piped in chunks (never whole in memory).

A Git LFS pointer whose object is stored is served as the object (its real size and bytes); the ETag stays
the pointer blob's id, which changes whenever the content does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from controller.git import lfs
from controller.services.commits import EntryNotFound, clean_path

CHUNK = 256 * 1024
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1"}


@dataclass(frozen=True)
class BlobEntry:
    oid: str
    size: int


def blob_entry(repo: Path, commit: str, path: str) -> BlobEntry:
    """The blob at path in commit (object id and size), or EntryNotFound (also for a folder or a submodule)."""
    clean = clean_path(path)
    result = subprocess.run(["git", "-C", str(repo), "ls-tree", "-z", "-l", "--full-tree", commit, "--", clean],
                            capture_output=True, env={**os.environ, **GIT_ENV}, check=False)
    record = result.stdout.decode(errors="replace").split("\0")[0]
    meta, _, found = record.partition("\t")
    fields = meta.split()
    if result.returncode != 0 or found != clean or len(fields) != 4 or fields[1] != "blob":
        raise EntryNotFound(f"{clean!r} does not exist at {commit[:12]}.")
    pointer = lfs.blob_pointer(repo, fields[2], int(fields[3]))
    return BlobEntry(fields[2], pointer.size if pointer else int(fields[3]))


async def blob_chunks(repo: Path, oid: str) -> AsyncIterator[bytes]:
    """The blob's bytes as `git cat-file blob` writes them (an LFS object's, for a pointer); the process ends
    with the stream."""
    pointer = lfs.blob_pointer(repo, oid)
    if pointer is not None:
        with lfs.ObjectStore.of_repo(repo).path(pointer.oid).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        return
    proc = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), "cat-file", "blob", oid, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={**os.environ, **GIT_ENV})
    assert proc.stdout is not None
    try:
        while chunk := await proc.stdout.read(CHUNK):
            yield chunk
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
