"""Unpacking a build context tar for buildah, with PEP 706's "data" extraction filter.

A build context is data: Python's "data" filter refuses absolute names, anything that would land outside the
destination (also through a link extracted earlier), links pointing outside it and device files, and drops
setuid/setgid bits. Python has the filters from 3.11.4; Debian bookworm's python3, which Spaceport's own
image runs, is 3.11.2 and refuses the `filter=` argument (every buildah build in the image failed on it), so
there the same checks are made by hand. A context holding such an entry is the repository's doing (a
symlink to /etc/passwd, say): the build fails naming the file.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

from builder.errors import BUILD_ERROR, BuildFailure

CLEARED_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH


def extract_context(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract every member of `tar` under `dest` as the "data" filter allows, or fail the build naming the file."""
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise _refused(exc.tarinfo.name, str(exc)) from None
        return
    root = os.path.realpath(dest)
    for member in tar.getmembers():
        _check(member, root)
        member.mode = (member.mode & ~CLEARED_BITS) | stat.S_IRUSR | stat.S_IWUSR
        tar.extract(member, dest)


def _check(member: tarfile.TarInfo, root: str) -> None:
    name = member.name
    if os.path.isabs(name):
        raise _refused(name, "its path is absolute")
    if member.isdev():
        raise _refused(name, "it is a device or a pipe")
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(target, root):
        raise _refused(name, "it would be written outside the build context")
    if member.issym():
        link = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname))
        if os.path.isabs(member.linkname) or not _inside(link, root):
            raise _refused(name, f"it links outside the repository (to {member.linkname})")
    elif member.islnk() and not _inside(os.path.realpath(os.path.join(root, member.linkname)), root):
        raise _refused(name, f"it links outside the repository (to {member.linkname})")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _refused(name: str, why: str) -> BuildFailure:
    return BuildFailure(BUILD_ERROR, f"the build context's file {name!r} cannot be used: {why}. Remove it from the "
                                     "repository, or make the link relative to a file inside it.")
