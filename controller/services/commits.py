"""The Hub commit API without git: NDJSON commits written into the bare repo with git plumbing.

A commit is built in a temporary index (read the parent's entries, apply the operations, write-tree,
commit-tree) and published with `update-ref NEW OLD`, so two concurrent commits never lose each other:
the loser re-applies its operations on the new head (unless the client pinned `parentCommit`).
Also the read side the Hub clients use: revisions, trees, commit logs, file blobs. Storage limits
(controller.git.quota) are checked before any object is written: the owner's stored bytes plus the
uploaded files' bytes must stay within them (preupload checks the declared sizes the same way).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import subprocess
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from controller.domain.errors import BadRequest, Conflict, NotFound, SpaceportError
from controller.domain.lfs import Pointer, lfs_patterns, valid_oid, wants_lfs
from controller.domain.lfs import parse as lfs_parse
from controller.git import quota, storage
from controller.git.lfs import ObjectStore, pointers_in

MAIN = "main"
REGULAR_MAX = 10 * 1024 * 1024  # larger files go through Git LFS (preupload answers "lfs")
ZERO = "0" * 40
_REV = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
LFS_MESSAGE = (
    "Files larger than 10 MB go through Git LFS: upload them with a huggingface_hub client (its preupload "
    "call sends them through LFS) or with git and git-lfs."
)


class RevisionNotFound(NotFound):
    hf_code = "RevisionNotFound"


class EntryNotFound(NotFound):
    hf_code = "EntryNotFound"


class PreconditionFailed(SpaceportError):
    status, code = 412, "precondition_failed"


class LfsNotSupported(BadRequest):
    code = "lfs_not_supported"


class LfsObjectMissing(BadRequest):
    code = "lfs_object_missing"


@dataclass(frozen=True)
class Entry:
    mode: str
    sha: str


@dataclass
class CommitRequest:
    summary: str
    description: str = ""
    parent: str | None = None
    ops: list[tuple[str, str, bytes]] = field(default_factory=list)  # (kind, path, content)


@dataclass(frozen=True)
class Author:
    name: str
    email: str


# ----------------------------------------------------------------------------- revisions


def check_branch(revision: str) -> None:
    """Spaces have one branch: commits go to main."""
    if revision not in (MAIN, "refs/heads/main"):
        raise BadRequest(f"Spaceport spaces have a single branch, 'main'; cannot commit to {revision!r}.")


def resolve(repo: Path, revision: str) -> str:
    """The commit sha a revision (branch, tag or sha) names, or RevisionNotFound."""
    if not _REV.match(revision) or revision.startswith("-") or ".." in revision:
        raise RevisionNotFound(f"Invalid revision {revision!r}.")
    sha = storage.head_sha(repo, revision)
    if sha is None:
        raise RevisionNotFound(f"Revision {revision!r} not found: the space has no such branch, tag or commit yet.")
    return sha


# ----------------------------------------------------------------------------- NDJSON body


def parse_ndjson(body: bytes) -> CommitRequest:
    """The body `HfApi.create_commit` sends: a header line, then one line per operation."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        raise BadRequest("Empty commit body: send NDJSON lines, the first being {'key': 'header', ...}.")
    items = [_json_line(line, i) for i, line in enumerate(lines, 1)]
    header = items[0].get("value")
    if items[0].get("key") != "header" or not isinstance(header, dict):
        raise BadRequest("The first NDJSON line must be {'key': 'header', 'value': {'summary': ...}}.")
    request = _header(header)
    for item in items[1:]:
        request.ops.append(_operation(item))
    return request


def _json_line(line: bytes, number: int) -> dict[str, object]:
    try:
        item = json.loads(line)
    except ValueError:
        raise BadRequest(f"Commit body line {number} is not valid JSON.") from None
    if not isinstance(item, dict):
        raise BadRequest(f"Commit body line {number} must be a JSON object with 'key' and 'value'.")
    return item


def _header(value: dict[str, object]) -> CommitRequest:
    summary, description, parent = value.get("summary"), value.get("description") or "", value.get("parentCommit")
    if not isinstance(summary, str) or not summary.strip():
        raise BadRequest("The commit needs a summary (commit message).")
    if not isinstance(description, str):
        raise BadRequest("The commit description must be a string.")
    if parent is not None and (not isinstance(parent, str) or not re.fullmatch(r"[0-9a-f]{40}", parent)):
        raise BadRequest("parentCommit must be a full 40-character commit sha.")
    return CommitRequest(summary=summary, description=description, parent=parent)


def _operation(item: dict[str, object]) -> tuple[str, str, bytes]:
    key, value = item.get("key"), item.get("value")
    if not isinstance(value, dict):
        raise BadRequest(f"Commit operation {key!r} needs a 'value' object.")
    path = clean_path(value.get("path"))
    if key == "lfsFile":
        return ("lfsFile", path, _lfs_pointer(value, path).text())
    if key == "file":
        return ("file", path, _content(value, path))
    if key in ("deletedFile", "deletedFolder"):
        return (str(key), path, b"")
    raise BadRequest(f"Unsupported commit operation {key!r}: use file, deletedFile or deletedFolder.")


def _lfs_pointer(value: dict[str, object], path: str) -> Pointer:
    oid, size = value.get("oid"), value.get("size")
    if value.get("algo", "sha256") != "sha256" or not valid_oid(oid) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"The lfsFile {path!r} needs algo 'sha256', 'oid' (64 lowercase hex) and 'size' (bytes).")
    assert isinstance(oid, str)
    return Pointer(oid, size)


def _check_lfs_objects(repo: Path, request: CommitRequest) -> None:
    """Each lfsFile names an object uploaded (through the LFS batch API) to the owner's store."""
    store = ObjectStore.of_repo(repo)
    for kind, path, content in request.ops:
        pointer = lfs_parse(content) if kind == "lfsFile" else None
        if pointer is not None and not store.has(pointer):
            raise LfsObjectMissing(f"{path}: its Git LFS object (sha256 {pointer.oid[:12]}..., {pointer.size} bytes) "
                                   "was never uploaded; upload it through the LFS batch API first.")


def _content(value: dict[str, object], path: str) -> bytes:
    content, encoding = value.get("content"), value.get("encoding", "base64")
    if not isinstance(content, str):
        raise BadRequest(f"File {path!r} has no 'content'.")
    if encoding == "utf-8":
        data = content.encode()
    elif encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"The content of {path!r} is not valid base64.") from None
    else:
        raise BadRequest(f"Unsupported encoding {encoding!r} for {path!r}: use base64.")
    if len(data) > REGULAR_MAX:
        raise LfsNotSupported(f"{path} is {len(data)} bytes. {LFS_MESSAGE}")
    return data


MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
_IGNORABLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                   "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"))  # git's HFS+ ignorables


def clean_path(path: object) -> str:
    """A relative path inside the repo, checked like git's verify_path (and stricter): no leading '/', no
    '.', '..' or '.git' component in any spelling (case, trailing dots/spaces, 8.3 `git~1`, Unicode
    compatibility forms such as fullwidth full stops U+FF0E, invisible characters), no control characters."""
    if not isinstance(path, str) or not path.strip("/"):
        raise BadRequest("Every commit operation needs a non-empty 'path'.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path) or "\\" in path:
        raise BadRequest(f"Invalid path {path!r}: control characters and backslashes are not allowed in file names.")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise BadRequest(f"Path is longer than {MAX_PATH_BYTES} bytes: shorten {path[:80]!r}...")
    parts = PurePosixPath(path.strip("/")).parts
    for part in parts:
        _check_component(path, part)
    return "/".join(parts)


def _check_component(path: str, part: str) -> None:
    if len(part.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"Invalid path {path!r}: a file or folder name is longer than {MAX_NAME_BYTES} bytes.")
    folded = unicodedata.normalize("NFKC", part.translate(_IGNORABLE)).casefold().rstrip(". ")
    if folded in ("", ".", "..", ".git", "git~1") or part in (".", ".."):
        raise BadRequest(f"Invalid path {path!r}: use a relative path inside the repository "
                         "(no '.', '..' or '.git' in any spelling).")


# ----------------------------------------------------------------------------- upload modes


def upload_modes(repo: Path, revision: str, files: Iterable[dict[str, object]],
                 limits: quota.StorageLimits | None = None) -> list[dict[str, object]]:
    """The preupload answer: 'lfs' for large or LFS-tracked files (.gitattributes at the revision),
    else 'regular', with the oid each has at the revision (if any)."""
    head = _head_or_none(repo, revision)
    existing = _tree_entries(repo, head)
    attributes = storage.read_file(repo, head, ".gitattributes") if head else None
    patterns = lfs_patterns(attributes.decode(errors="replace")) if attributes else []
    result: list[dict[str, object]] = []
    declared = 0
    for item in files:
        path = clean_path(item.get("path"))
        size = item.get("size")
        size = size if isinstance(size, int) else 0
        declared += max(size, 0)
        mode = "lfs" if wants_lfs(path, size, patterns, REGULAR_MAX) else "regular"
        entry = existing.get(path)
        result.append({"path": item.get("path"), "uploadMode": mode, "shouldIgnore": False,
                       "oid": entry.sha if entry else None})
    if limits is not None:
        quota.check(limits, repo, declared, "this upload")
    return result


def _head_or_none(repo: Path, revision: str) -> str | None:
    try:
        return resolve(repo, revision)
    except RevisionNotFound:
        return None


# ----------------------------------------------------------------------------- writing


def write_commit(repo: Path, request: CommitRequest, author: Author, attempts: int = 5,
                 limits: quota.StorageLimits | None = None) -> str:
    """Create the commit on main and move main to it; return its sha.

    API commits are serialized per repo by a file lock; the compare-and-swap on main still protects
    against a concurrent `git push`, whose commit the retry builds on. Storage limits are checked and the
    objects written under the owner's quota lock; over a limit (StorageLimitExceeded, 413) nothing is written.
    """
    limits = limits or quota.StorageLimits()
    _check_lfs_objects(repo, request)
    with _repo_lock(repo), quota.owner_lock(limits, repo):
        quota.check(limits, repo, sum(len(content) for kind, _path, content in request.ops if kind == "file"),
                    "this commit")
        return _commit_with_retries(repo, request, author, attempts)


@contextmanager
def _repo_lock(repo: Path) -> Iterator[None]:
    with (repo / "spaceport-commit.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _commit_with_retries(repo: Path, request: CommitRequest, author: Author, attempts: int) -> str:
    for _ in range(attempts):
        parent = storage.head_sha(repo)
        if request.parent is not None and request.parent != parent:
            raise PreconditionFailed(
                f"parentCommit {request.parent[:12]} is not the head of main ({(parent or 'empty')[:12]}): "
                "someone committed in between. Fetch the latest revision and retry."
            )
        sha = _build_commit(repo, request, author, parent)
        if _move_main(repo, sha, parent):
            return sha
    raise Conflict("main kept moving while committing (many concurrent commits); retry.")


def _build_commit(repo: Path, request: CommitRequest, author: Author, parent: str | None) -> str:
    entries = _tree_entries(repo, parent)
    for kind, path, content in request.ops:
        _apply(repo, entries, kind, path, content)
    tree = _write_tree(repo, entries)
    message = request.summary.strip() + ("\n\n" + request.description.strip() if request.description.strip() else "")
    args = ["commit-tree", tree, *(["-p", parent] if parent else []), "-F", "-"]
    return _git(repo, *args, input=message.encode() + b"\n", env=_author_env(author)).strip()


def _apply(repo: Path, entries: dict[str, Entry], kind: str, path: str, content: bytes) -> None:
    if kind == "deletedFile":
        if entries.pop(path, None) is None:
            raise EntryNotFound(f"Cannot delete {path!r}: A file with this name doesn't exist.")
    elif kind == "deletedFolder":
        doomed = [p for p in entries if p.startswith(path + "/")]
        if not doomed:
            raise EntryNotFound(f"Cannot delete folder {path!r}: A folder with this name doesn't exist.")
        for p in doomed:
            del entries[p]
    else:
        _check_no_clash(entries, path)
        entries[path] = Entry("100644", _git(repo, "hash-object", "-w", "--stdin", input=content).strip())


def _check_no_clash(entries: dict[str, Entry], path: str) -> None:
    parents = [str(p) for p in PurePosixPath(path).parents if str(p) != "."]
    clash = next((p for p in parents if p in entries), None)
    if clash is not None:
        raise BadRequest(f"Cannot add {path!r}: {clash!r} is a file, not a folder.")
    if any(p.startswith(path + "/") for p in entries):
        raise BadRequest(f"Cannot add file {path!r}: a folder with that name exists; delete it first.")


def _write_tree(repo: Path, entries: dict[str, Entry]) -> str:
    index = repo / f"spaceport-index-{os.getpid()}-{id(entries)}"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        _git(repo, "read-tree", "--empty", env=env)
        records = b"".join(f"{e.mode} {e.sha}\t{p}".encode() + b"\0" for p, e in sorted(entries.items()))
        _git(repo, "update-index", "-z", "--index-info", input=records, env=env)
        return _git(repo, "write-tree", env=env).strip()
    finally:
        index.unlink(missing_ok=True)


def _move_main(repo: Path, new: str, old: str | None) -> bool:
    """Compare-and-swap main: False if someone else moved it first."""
    result = subprocess.run(["git", "-C", str(repo), "update-ref", storage.MAIN, new, old or ZERO],
                            capture_output=True, check=False)
    return result.returncode == 0


def _author_env(author: Author) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name, "GIT_COMMITTER_EMAIL": author.email}


def _git(repo: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
    result = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, env=full_env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode(errors="replace")


# ----------------------------------------------------------------------------- reading


def _tree_entries(repo: Path, sha: str | None) -> dict[str, Entry]:
    if sha is None:
        return {}
    out = _git(repo, "ls-tree", "-r", "-z", "--full-tree", sha)
    entries: dict[str, Entry] = {}
    for record in filter(None, out.split("\0")):
        meta, _, path = record.partition("\t")
        mode, _kind, obj = meta.split()
        entries[path] = Entry(mode, obj)
    return entries


def tree(repo: Path, sha: str, path: str, recursive: bool) -> list[dict[str, object]]:
    """Entries under path as `list_repo_tree` parses them (type file|directory, oid, size, path)."""
    prefix = clean_path(path) + "/" if path.strip("/") else ""
    args = ["ls-tree", "-z", "-l", "--full-tree", *(["-r", "-t"] if recursive else []), sha]
    if prefix:
        args += ["--", prefix]
    out = _git(repo, *args)
    items: list[dict[str, object]] = []
    for record in filter(None, out.split("\0")):
        meta, _, entry_path = record.partition("\t")
        _mode, kind, obj, size = meta.split()
        if prefix and not entry_path.startswith(prefix):
            continue  # the folder itself, listed by -t
        if kind == "tree":
            items.append({"type": "directory", "oid": obj, "path": entry_path})
        elif kind == "blob":
            items.append({"type": "file", "oid": obj, "size": int(size), "path": entry_path})
    if prefix and not items:
        raise EntryNotFound(f"{path!r} does not exist at {sha[:12]}.")
    _describe_lfs(repo, items)
    return items


def _describe_lfs(repo: Path, items: list[dict[str, object]]) -> None:
    """LFS files as the Hub lists them: the real size, and `lfs` {oid, size, pointerSize}."""
    files = [(str(i["oid"]), int(str(i["size"])), str(i["path"])) for i in items if i["type"] == "file"]
    pointers = dict(pointers_in(repo, files))
    for item in items:
        pointer = pointers.get(str(item["path"]))
        if pointer is not None:
            item["lfs"] = {"oid": pointer.oid, "size": pointer.size, "pointerSize": item["size"]}
            item["size"] = pointer.size


def blob(repo: Path, sha: str, path: str) -> tuple[str, bytes]:
    """(blob sha, content) of a file at a commit, or EntryNotFound."""
    clean = clean_path(path)
    out = _git(repo, "ls-tree", "-z", "--full-tree", sha, "--", clean)
    record = out.split("\0")[0]
    meta, _, found = record.partition("\t")
    if found != clean or meta.split()[1] != "blob":
        raise EntryNotFound(f"{clean!r} does not exist at {sha[:12]}.")
    obj = meta.split()[2]
    data = subprocess.run(["git", "-C", str(repo), "cat-file", "blob", obj], capture_output=True, check=True).stdout
    return obj, data


def log(repo: Path, sha: str, skip: int, limit: int) -> list[dict[str, object]]:
    """Commits reachable from sha, newest first, as `list_repo_commits` parses them."""
    fmt = "%H%x1f%an%x1f%ct%x1f%s%x1f%B%x1e"
    out = _git(repo, "log", f"--skip={skip}", f"-n{limit}", f"--format={fmt}", sha)
    items: list[dict[str, object]] = []
    for record in filter(None, (r.strip("\n") for r in out.split("\x1e"))):
        commit, name, ts, title, body = record.split("\x1f", 4)
        date = datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")
        items.append({"id": commit, "title": title, "message": body.strip(), "date": date,
                      "authors": [{"user": name}]})
    return items
