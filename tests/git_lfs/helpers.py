"""Work trees with Git LFS files, made and pushed with the real git and git-lfs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.support.gitrepo import git

POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def blob(seed: str, size: int) -> bytes:
    """Incompressible bytes (with NULs, so any client calls them binary), reproducible from the seed."""
    out, block = bytearray(), seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return b"\0" + bytes(out[: size - 1])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lfs_repo(path: Path, files: dict[str, bytes], track: tuple[str, ...] = ("*.bin", "*.png")) -> Path:
    """A work tree with git-lfs installed locally, `track`ed patterns and one commit holding files."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "lfs", "install", "--local")
    for pattern in track:
        git(path, "lfs", "track", pattern)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "with lfs files")
    return path


def pointer_repo(path: Path, files: dict[str, str], pointers: dict[str, bytes]) -> Path:
    """A plain-git work tree whose commit holds LFS pointer files (their objects exist nowhere)."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    for name, text in files.items():
        (path / name).write_text(text)
    for name, data in pointers.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(POINTER.format(oid=sha256(data), size=len(data)))
    git(path, "-c", "filter.lfs.clean=cat", "-c", "filter.lfs.required=false", "-c", "filter.lfs.process=",
        "add", "-A")
    git(path, "commit", "-q", "-m", "pointers only")
    return path


def stored_objects(data_dir: Path, owner: str) -> list[Path]:
    root = data_dir / "repos" / owner / "lfs" / "objects"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def temp_files(data_dir: Path, owner: str) -> list[str]:
    tmp = data_dir / "repos" / owner / "lfs" / "tmp"
    return os.listdir(tmp) if tmp.exists() else []
