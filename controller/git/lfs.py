"""Git LFS objects on disk and the pointers in a repo that name them.

Objects are content-addressed per owner: DATA_DIR/repos/OWNER/lfs/objects/AA/BB/OID (OID = sha256 of the
content), beside the owner's bare repos, so the owner's storage walk (controller.git.quota) counts them
with no extra bookkeeping, and a file two of an owner's spaces hold is stored once. An object is only
ever written whole: into lfs/tmp, checked (size and sha256), then renamed into place; never changed after,
so duplicate can hard-link it into another owner's store. Which space may hand out an object is decided
by its git history (a repo may serve an oid only if it holds a pointer to it): see `repo_has_pointer`.

Like the quota check this module imports only the standard library and the domain: the pre-receive hook
(`missing_objects`) runs it in a fresh interpreter for every push.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from controller.domain.lfs import Pointer, may_be_pointer, parse, valid_oid

__all__ = ["ObjectStore", "Pointer", "parse"]

STALE_UPLOAD_SECONDS = 86400  # an upload's temp file untouched this long was cut off (uploads write as they go)


@dataclass(frozen=True)
class ObjectStore:
    root: Path  # DATA_DIR/repos/OWNER/lfs

    @classmethod
    def of_repo(cls, repo: Path) -> ObjectStore:
        """The store of the owner of repo (DATA_DIR/repos/OWNER/NAME.git)."""
        return cls(repo.parent / "lfs")

    def path(self, oid: str) -> Path:
        if not valid_oid(oid):
            raise ValueError(f"not a sha256 object id: {oid!r}")
        return self.root / "objects" / oid[:2] / oid[2:4] / oid

    def has(self, pointer: Pointer) -> bool:
        """The object is stored with the pointer's size (its hash was checked when it was written)."""
        try:
            return self.path(pointer.oid).stat().st_size == pointer.size
        except FileNotFoundError:
            return False

    def temp_file(self) -> tuple[int, Path]:
        """A new file in lfs/tmp (on the store's filesystem, counted by the owner's storage walk); what an
        upload cut off by a crash left there a day ago is removed first, so it stops counting."""
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        _remove_stale(tmp, time.time() - STALE_UPLOAD_SECONDS)
        fd, name = tempfile.mkstemp(dir=tmp, prefix="upload-")
        return fd, Path(name)

    def publish(self, tmp: Path, oid: str) -> None:
        """Move a checked temp file into place (atomic; an object already there is kept)."""
        dest = self.path(oid)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)

    def link_from(self, other: ObjectStore, pointer: Pointer) -> bool:
        """Share another store's object by reference (a hard link; a copy across filesystems)."""
        if self.has(pointer) or not other.has(pointer):
            return False
        dest = self.path(pointer.oid)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(other.path(pointer.oid), dest)
        except FileExistsError:
            return False
        except OSError:  # another filesystem: copy through a temp file so no half object is ever visible
            fd, tmp = self.temp_file()
            os.close(fd)
            shutil.copyfile(other.path(pointer.oid), tmp)
            self.publish(tmp, pointer.oid)
        return True


def _remove_stale(tmp: Path, before: float) -> None:
    for entry in os.scandir(tmp):
        try:
            if entry.stat(follow_symlinks=False).st_mtime < before:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue


def _git(repo: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    """git in repo; env None: the isolated environment of controller.git.storage (the hook passes its own)."""
    if env is None:
        from controller.git.storage import git_env
        env = git_env()
    result = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed (exit {result.returncode}): {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _read_blobs(repo: Path, shas: list[str], env: dict[str, str] | None) -> Iterator[tuple[str, bytes]]:
    """(sha, content) of each blob, read by one `git cat-file --batch`."""
    if not shas:
        return
    out = _git(repo, "cat-file", "--batch", input="".join(f"{s}\n" for s in shas).encode(), env=env)
    pos = 0
    while pos < len(out):
        end = out.index(b"\n", pos)
        sha, _kind, size = out[pos:end].decode().split()
        start = end + 1
        yield sha, out[start:start + int(size)]
        pos = start + int(size) + 1


def pointers_in(repo: Path, candidates: Iterable[tuple[str, int, str]],
                env: dict[str, str] | None = None) -> list[tuple[str, Pointer]]:
    """(path, pointer) for each candidate blob (sha, size, path) that is an LFS pointer."""
    small = [(sha, path) for sha, size, path in candidates if may_be_pointer(size)]
    by_sha = {sha: content for sha, content in _read_blobs(repo, sorted({s for s, _ in small}), env)}
    found = []
    for sha, path in small:
        pointer = parse(by_sha.get(sha, b""))
        if pointer is not None:
            found.append((path, pointer))
    return found


def tree_pointers(repo: Path, commit: str) -> list[tuple[str, Pointer]]:
    """The LFS pointers among the regular files of a commit's tree."""
    out = _git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", commit).decode(errors="surrogateescape")
    candidates = []
    for record in filter(None, out.split("\0")):
        meta, _, path = record.partition("\t")
        mode, kind, sha, size = meta.split()
        if kind == "blob" and mode in ("100644", "100755") and size.isdigit():
            candidates.append((sha, int(size), path))
    return pointers_in(repo, candidates)


def all_pointers(repo: Path) -> list[Pointer]:
    """Every LFS pointer blob the repo holds, in any commit (what a duplicate must bring along)."""
    out = _git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype) %(objectsize)")
    candidates = []
    for line in out.decode().splitlines():
        sha, kind, size = line.split()
        if kind == "blob":
            candidates.append((sha, int(size), ""))
    return sorted({pointer for _path, pointer in pointers_in(repo, candidates)}, key=lambda p: p.oid)


def repo_has_pointer(repo: Path, pointers: list[Pointer]) -> set[Pointer]:
    """Which of the pointers the repo holds as canonical pointer blobs (one `git cat-file`, no scan)."""
    if not pointers or not (repo / "HEAD").exists():
        return set()
    by_sha = {p.git_blob_sha(): p for p in pointers}
    out = _git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)",
               input="".join(f"{sha}\n" for sha in by_sha).encode())
    held = set()
    for line in out.decode().splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1] == "blob" and fields[0] in by_sha:
            held.add(by_sha[fields[0]])
    return held


def blob_pointer(repo: Path, blob_sha: str, size: int | None = None) -> Pointer | None:
    """The pointer a blob is, if it is one and its object is stored (else None: serve the blob itself)."""
    if size is None:
        size = int(_git(repo, "cat-file", "-s", blob_sha).strip())
    if not may_be_pointer(size):
        return None
    pointer = parse(_git(repo, "cat-file", "blob", blob_sha))
    return pointer if pointer is not None and ObjectStore.of_repo(repo).has(pointer) else None


def smudge_tree(repo: Path, commit: str, dest: Path) -> list[str]:
    """Replace the pointer files an exported commit (in dest) holds by their objects' contents.

    Returns the paths whose object is not stored (they stay pointers; a push can no longer create those)."""
    store, root, missing = ObjectStore.of_repo(repo), dest.resolve(), []
    for path, pointer in tree_pointers(repo, commit):
        target = dest / path
        if target.is_symlink() or not target.is_file() or root not in target.resolve().parents:
            continue
        if not store.has(pointer):
            missing.append(path)
            continue
        mode = target.stat().st_mode
        target.unlink()
        shutil.copyfile(store.path(pointer.oid), target)
        os.chmod(target, mode & 0o777)
    return missing


# ----------------------------------------------------------------------------- the pre-receive check


def pushed_blobs(repo: Path, updates: list[tuple[str, str, str]], env: dict[str, str]) -> list[tuple[str, int, str]]:
    """(sha, size, path) of the blobs a push brings that no existing ref reaches."""
    news = [new for _old, new, _ref in updates if new.strip("0")]
    if not news:
        return []
    listed = _git(repo, "rev-list", "--objects", *news, "--not", "--all", env=env)
    checked = _git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize) %(rest)",
                   input=listed, env=env)
    blobs = []
    for line in checked.decode(errors="surrogateescape").splitlines():
        sha, kind, size, *rest = line.split(" ", 3)
        if kind == "blob":
            blobs.append((sha, int(size), rest[0] if rest else ""))
    return blobs


def missing_objects(repo: Path, updates: list[tuple[str, str, str]], env: dict[str, str]) -> list[tuple[str, Pointer]]:
    """The pushed pointers whose object was never uploaded to the owner's store."""
    store = ObjectStore.of_repo(repo)
    return [(path, p) for path, p in pointers_in(repo, pushed_blobs(repo, updates, env), env) if not store.has(p)]


def refusal(missing: list[tuple[str, Pointer]]) -> str:
    shown = "; ".join(f"{path or '(a file)'} (sha256 {p.oid[:12]}..., {p.size} bytes)" for path, p in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return (f"Spaceport refuses this push: Git LFS pointers whose objects were never uploaded: {shown}{more}. "
            "Install git-lfs (`git lfs install`) and push again so it uploads them (or run "
            "`git lfs push --all <remote> main`), or commit these files without LFS.")
