"""Git LFS pointers (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md): parse, write, recognise.

A pointer is a small text blob that stands in the git tree for a large file kept outside git:

    version https://git-lfs.github.com/spec/v1
    oid sha256:<64 lowercase hex>
    size <bytes>

Parsing is strict (the spec's grammar, < 1024 bytes, keys sorted, `version` first): anything else is an
ordinary file. Pure: no I/O (the standard library only, so git's pre-receive hook imports it quickly).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass

VERSION = "https://git-lfs.github.com/spec/v1"
LEGACY_VERSIONS = ("https://hawser.github.com/spec/v1",)
MAX_POINTER_BYTES = 1024  # the spec: pointer files are smaller than this
_OID = re.compile(r"^[0-9a-f]{64}$")
_KEY = re.compile(r"^[a-z0-9.-]+$")
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,18})$")


@dataclass(frozen=True)
class Pointer:
    oid: str  # sha256 of the content, 64 lowercase hex
    size: int

    def text(self) -> bytes:
        """The canonical pointer, byte for byte what git-lfs and huggingface_hub write."""
        return f"version {VERSION}\noid sha256:{self.oid}\nsize {self.size}\n".encode()

    def git_blob_sha(self) -> str:
        """The git object id of the canonical pointer blob (to find it in a repo without a scan)."""
        data = self.text()
        return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def valid_oid(oid: object) -> bool:
    return isinstance(oid, str) and bool(_OID.match(oid))


def may_be_pointer(size: int) -> bool:
    """Whether a blob of this size is worth reading to see if it is a pointer."""
    return 0 < size < MAX_POINTER_BYTES


def parse(data: bytes) -> Pointer | None:
    """The pointer `data` is, or None for any other content (a file that merely looks similar)."""
    if not may_be_pointer(len(data)) or not data.startswith(b"version ") or not data.endswith(b"\n"):
        return None
    try:
        lines = data.decode("ascii").split("\n")[:-1]
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for number, line in enumerate(lines):
        key, sep, value = line.partition(" ")
        if not sep or not _KEY.match(key) or key in fields or (number > 1 and key < lines[number - 1].split(" ")[0]):
            return None
        fields[key] = value
    if lines[0].partition(" ")[0] != "version":
        return None
    return _pointer(fields)


def _pointer(fields: dict[str, str]) -> Pointer | None:
    if fields.get("version") not in (VERSION, *LEGACY_VERSIONS):
        return None
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not oid.startswith("sha256:") or not valid_oid(oid[7:]) or not _SIZE.match(size):
        return None
    return Pointer(oid[7:], int(size))


# ----------------------------------------------------------------------------- the Hub's preupload decision


def lfs_patterns(gitattributes: str) -> list[str]:
    """The patterns a .gitattributes sends through LFS (`PATTERN filter=lfs ...`; `-filter` lines undo)."""
    patterns: list[str] = []
    for line in gitattributes.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
        elif "-filter" in fields[1:] or "!filter" in fields[1:]:
            patterns = [p for p in patterns if p != fields[0]]
    return patterns


def tracked(path: str, patterns: list[str]) -> bool:
    """Does a .gitattributes pattern (git's rules: no '/' matches the base name anywhere) cover path?"""
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        anchored = pattern.lstrip("/")
        subject = path if "/" in pattern.rstrip("/") else name
        if fnmatch.fnmatchcase(subject, anchored) or (anchored.endswith("/**") and path.startswith(anchored[:-2])):
            return True
    return False


def wants_lfs(path: str, size: int, patterns: list[str], regular_max: int) -> bool:
    """The preupload decision: LFS for files too large to commit inline and for paths .gitattributes sends
    through LFS. Small untracked binaries stay regular (the hosted Hub sends them through LFS too, but a
    huggingface_hub with hf_xet installed then uploads by Xet, which Spaceport does not serve)."""
    return size > regular_max or tracked(path, patterns)
