"""Repository storage limits: what an owner (user or organization namespace) and one space may store.

Usage is measured on disk every time, never cached: the allocated blocks (like `du`) of every file and
directory under DATA_DIR/repos/OWNER, hard links counted once, symlinks not followed. That includes what
git keeps besides objects (refs, logs, packed-refs) and the quarantine directory of a push in progress
(`objects/tmp_objdir-incoming-*`), so the pre-receive hook sees the push's own objects and those of other pushes still
being checked. A walk costs one stat per file (git's auto gc keeps loose objects in the low thousands).

Writes are refused when the stored bytes plus what the write adds would pass a limit (0 = no limit):
git push in the pre-receive hook (this module's `main`, fed by the environment the controller gives
`git http-backend`; git drops a refused push's quarantined objects), the commit API before any object is
written, and duplicate before the copy. An owner's API commits (to any of its spaces) check and write
under one lock per owner, which the pre-receive check takes too, so parallel uploads cannot each pass on
the same free room. What stays open: git moves a push's objects out of quarantine after its hook exits,
so a walk racing that move, or a duplicate's copy, may miss bytes in flight and overshoot by them once;
the next write is then refused. This module imports only the standard library and domain errors: the
hook starts quickly.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controller.domain.errors import SpaceportError
from controller.domain.units import format_bytes

if TYPE_CHECKING:
    from controller.config import Settings

OWNER_SETTING = "SPACEPORT_MAX_OWNER_REPO_BYTES"
REPO_SETTING = "SPACEPORT_MAX_REPO_BYTES"
REPO_ENV = "SPACEPORT_QUOTA_REPO"  # the bare repo a push goes to (set by controller.git.http)
LOCK_NAME = "spaceport-quota.lock"  # in DATA_DIR/repos/OWNER (repos are NAME.git: no clash); empty, 0 blocks
FIX = ("delete spaces you no longer need, or ask an admin to raise the limit (deleting files in a new "
       "commit does not shrink a repository: its history keeps them)")


class StorageLimitExceeded(SpaceportError):
    status, code = 413, "storage_limit_exceeded"


@dataclass(frozen=True)
class StorageLimits:
    owner_bytes: int = 0  # 0: no limit
    repo_bytes: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageLimits:
        return cls(settings.max_owner_repo_bytes, settings.max_repo_bytes)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageLimits:
        return cls(int(env.get(OWNER_SETTING) or 0), int(env.get(REPO_SETTING) or 0))

    def env(self) -> dict[str, str]:
        return {OWNER_SETTING: str(self.owner_bytes), REPO_SETTING: str(self.repo_bytes)}

    @property
    def unlimited(self) -> bool:
        return self.owner_bytes <= 0 and self.repo_bytes <= 0


def disk_usage(root: Path) -> int:
    """Allocated bytes under root (0 if it is missing); files vanishing meanwhile are skipped."""
    total, seen, stack = 0, set[tuple[int, int]](), [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


@dataclass(frozen=True)
class Measured:
    """One limit that is set, with what its subject stores now."""

    owner: str
    space: str | None  # None: the owner's namespace as a whole
    stored: int
    limit: int

    def refusal(self, rest: str = "", would: bool = False) -> StorageLimitExceeded:
        """ "owner alice stores 10.2 GiB of repositories, the limit is 10 GiB (SETTING): what to do." """
        verb = "would store" if would else "stores"
        if self.space is None:
            said = f"owner {self.owner} {verb} {format_bytes(self.stored)} of repositories{rest}, the limit is " \
                   f"{format_bytes(self.limit)} ({OWNER_SETTING})"
        else:
            said = f"space {self.owner}/{self.space} {verb} {format_bytes(self.stored)}{rest}, the limit per space is " \
                   f"{format_bytes(self.limit)} ({REPO_SETTING})"
        return StorageLimitExceeded(f"{said}: {FIX}.")


def measure(limits: StorageLimits, repo: Path) -> list[Measured]:
    """The usage behind each limit that is set; repo is DATA_DIR/repos/OWNER/NAME.git."""
    owner, name = repo.parent.name, repo.name.removesuffix(".git")
    found = []
    if limits.owner_bytes > 0:
        found.append(Measured(owner, None, disk_usage(repo.parent), limits.owner_bytes))
    if limits.repo_bytes > 0:
        found.append(Measured(owner, name, disk_usage(repo), limits.repo_bytes))
    return found


def check(limits: StorageLimits, repo: Path, adding: int, what: str) -> None:
    """Refuse (StorageLimitExceeded) when the owner, or the repo, would store more than its limit once
    `what` (e.g. "this commit") adds `adding` bytes."""
    for measured in measure(limits, repo):
        if measured.stored + adding > measured.limit:
            raise measured.refusal(f" and {what} adds {format_bytes(adding)}")


def check_room(limits: StorageLimits, repo: Path) -> None:
    """Before a push is accepted: refuse when the owner (or the repo) is already at or over its limit."""
    for measured in measure(limits, repo):
        if measured.stored >= measured.limit:
            raise measured.refusal()


def check_pushed(limits: StorageLimits, repo: Path) -> None:
    """In pre-receive: the push's objects are on disk already (its quarantine), so they are in the usage."""
    for measured in measure(limits, repo):
        if measured.stored > measured.limit:
            raise measured.refusal(" with this push", would=True)


@contextmanager
def owner_lock(limits: StorageLimits, repo: Path) -> Iterator[None]:
    """Hold the owner's quota lock (across processes) while checking and writing; none without limits."""
    if limits.unlimited:
        yield
        return
    with (repo.parent / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def main() -> int:
    """The pre-receive check: refuse the push (message on stderr, git shows it as `remote: ...`)."""
    repo = os.environ.get(REPO_ENV)
    if not repo:
        return 0  # not a push through Spaceport's git HTTP (no limits were given)
    limits = StorageLimits.from_env(os.environ)
    try:
        with owner_lock(limits, Path(repo)):  # waits for an API commit of this owner that is being written
            check_pushed(limits, Path(repo))
    except StorageLimitExceeded as exc:
        print(f"Spaceport refuses this push: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
