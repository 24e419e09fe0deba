"""The pointer grammar (git-lfs docs/spec.md): what is a pointer, and what only looks like one."""

from __future__ import annotations

import subprocess

import pytest

from controller.domain.lfs import Pointer, lfs_patterns, parse, tracked, wants_lfs

OID = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
CANONICAL = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n".encode()


def test_canonical_pointer_round_trips_and_its_git_id_is_gits() -> None:
    pointer = parse(CANONICAL)
    assert pointer == Pointer(OID, 12345) and pointer.text() == CANONICAL
    git_id = subprocess.run(["git", "hash-object", "--stdin"], input=CANONICAL, capture_output=True, check=True)
    assert pointer.git_blob_sha() == git_id.stdout.decode().strip()


def test_extension_lines_sorted_before_oid_are_accepted() -> None:
    ext = f"version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{OID}\noid sha256:{OID}\nsize 1\n"
    assert parse(ext.encode()) == Pointer(OID, 1)


@pytest.mark.parametrize("data", [
    CANONICAL.replace(b"\n", b"\r\n"),  # CRLF
    CANONICAL[:-1],  # no final newline
    CANONICAL.replace(b"size 12345", b"size -1"),
    CANONICAL.replace(b"size 12345", b"size 012"),
    CANONICAL.replace(OID.encode(), OID.upper().encode()),
    CANONICAL.replace(b"sha256:", b"md5:"),
    CANONICAL.replace(b"spec/v1", b"spec/v2"),
    f"oid sha256:{OID}\nversion https://git-lfs.github.com/spec/v1\nsize 1\n".encode(),  # version not first
    f"version https://git-lfs.github.com/spec/v1\nsize 1\noid sha256:{OID}\n".encode(),  # keys unsorted
    CANONICAL + b"x" * 1024,  # too long
    b"\xff" + CANONICAL,
    b"",
])
def test_lookalikes_are_ordinary_files(data: bytes) -> None:
    assert parse(data) is None


def test_preupload_decision_follows_size_and_gitattributes() -> None:
    patterns = lfs_patterns("*.png filter=lfs diff=lfs merge=lfs -text\nmodels/** filter=lfs\n"
                            "*.bin filter=lfs\nkeep.bin -filter\n# *.txt filter=lfs\n")
    assert tracked("img/a.png", patterns) and tracked("models/x/y.txt", patterns) and tracked("a.bin", patterns)
    assert not tracked("notes.txt", patterns) and not tracked("png", patterns)
    assert wants_lfs("big.txt", 11 * 1024 * 1024, [], 10 * 1024 * 1024)
    assert not wants_lfs("small.dat", 10, patterns, 10 * 1024 * 1024)
