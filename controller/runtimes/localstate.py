"""On-disk record of one local instance, so a restarted controller can adopt it.

Layout under the runtime's state dir (mode 0700, never visible to apps):
    instances/<name>/state.json   this record (no env values: secrets are not written to disk here)
    instances/<name>/app.log      stdout+stderr of the app
    instances/<name>/exit         exit code written by the supervisor when the app ends
    instances/<name>/home/        the app's private writable home (kept by stop, deleted by remove)
    instances/<name>/tmp/         its TMPDIR when not sandboxed
    instances/<name>/etc/         generated passwd/group for the sandbox
    instances/<name>/app-layer/   upper/work dirs of the app's /home/user/app overlay (emptied every start)
    instances/<name>/venv-layer/  upper/work dirs of the overlay making its venv writable (emptied every start)
    instances/<name>/venv-dirs/   that overlay's directory skeleton of the sealed venv, made once per instance

What an app writes to disk is `InstanceDir.writable` (home, app-layer, venv-layer, tmp), measured by
`disk_usage`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
BLOCK = 4096  # what one file or directory costs at least (ext4's block): empty files still use an inode
METACOPY = "trusted.overlay.metacopy"  # set by overlayfs only (apps cannot set trusted.* xattrs)
MAX_DEPTH = 256  # directory levels measured; deeper is refused (TooDeep)


@dataclass
class LocalRecord:
    name: str
    space_id: str
    spec_hash: str
    artifact: dict[str, object]
    labels: dict[str, str]
    host: str
    port: int
    pid: int
    pid_start: int | None
    started_at: float
    sandboxed: bool
    uid: int | None = None
    slot: int | None = None
    stopped: bool = False
    frozen: bool = False
    extra: dict[str, str] = field(default_factory=dict)


class InstanceDir:
    def __init__(self, root: Path, name: str) -> None:
        if not NAME_RE.match(name):
            raise ValueError(f"invalid instance name {name!r}: use lowercase letters, digits, '.', '_', '-'")
        self.path = root / name

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def log(self) -> Path:
        return self.path / "app.log"

    @property
    def exit(self) -> Path:
        return self.path / "exit"

    @property
    def home(self) -> Path:
        return self.path / "home"

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    @property
    def etc(self) -> Path:
        return self.path / "etc"

    @property
    def app_layer(self) -> Path:
        """Upper and work directories of the app's /home/user/app overlay (never visible to the app)."""
        return self.path / "app-layer"

    @property
    def venv_layer(self) -> Path:
        """Upper and work directories of the overlay that makes the app's venv writable (never visible)."""
        return self.path / "venv-layer"

    @property
    def venv_dirs(self) -> Path:
        """The venv's directory skeleton owned by the app's uid (platform-made; the venv never changes for
        one instance: a new artifact is a new spec, which replaces the instance and this directory)."""
        return self.path / "venv-dirs"

    @property
    def writable(self) -> tuple[Path, ...]:
        """Everything the app itself can write to on the host's disk (its logs are capped separately)."""
        return (self.home, self.app_layer, self.venv_layer, self.tmp)

    def read(self) -> LocalRecord | None:
        try:
            return LocalRecord(**json.loads(self.state.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, record: LocalRecord) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1))
        tmp.replace(self.state)

    def exit_code(self) -> int | None:
        try:
            return int(self.exit.read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with self.log.open("rb") as handle:
                handle.seek(0, 2)
                handle.seek(max(0, handle.tell() - 16384))
                data = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])


def recorded_artifacts(instances: Path) -> list[tuple[str, dict[str, object]]]:
    """(space id, artifact) of every instance recorded under a local runtime's instances/ dir, running or
    stopped (read without a runtime: the build worker's garbage collection needs them too)."""
    found: list[tuple[str, dict[str, object]]] = []
    with contextlib.suppress(OSError):
        for path in instances.iterdir():
            with contextlib.suppress(ValueError):
                record = InstanceDir(instances, path.name).read()
                if record is not None:
                    found.append((record.space_id, record.artifact))
    return found


class TooDeep(Exception):
    """A tree nested deeper than MAX_DEPTH directories: it is not measured (an abuse, not an app's data)."""


def disk_usage(roots: tuple[Path, ...] | list[Path], stop_after: int | None = None) -> int:
    """Bytes of disk the trees under `roots` take: allocated blocks (st_blocks, so a sparse file counts
    what it really holds, not its apparent size), each file or directory at least BLOCK (a million empty
    files cost inodes), hard links once, symlinks never followed, other filesystems not entered. An
    overlay metadata-only copy-up (the sandbox's chown of the app's code) holds no data and is free.
    Walked by directory file descriptors, so no path is too long to count; deeper than MAX_DEPTH raises
    TooDeep. Stops counting once the total passes `stop_after` (the caller only needs to know it is over)."""
    walk = _Walk(stop_after)
    for root in roots:
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            walk.tree(fd)
        finally:
            os.close(fd)
        if walk.over():
            break
    return walk.total


class _Walk:
    def __init__(self, stop_after: int | None) -> None:
        self.total, self.stop_after = 0, stop_after
        self.seen: set[tuple[int, int]] = set()

    def over(self) -> bool:
        return self.stop_after is not None and self.total > self.stop_after

    def tree(self, root_fd: int) -> None:
        """Depth first, holding two descriptors per level (the directory, and scandir's duplicate of it)."""
        device = os.fstat(root_fd).st_dev
        stack = [(os.dup(root_fd), os.scandir(root_fd))]
        try:
            while stack and not self.over():
                fd, entries = stack[-1]
                entry = next(entries, None)
                if entry is None:
                    entries.close()
                    os.close(stack.pop()[0])
                    continue
                child = self._entry(entry, fd, device)
                if child is None:
                    continue
                if len(stack) >= MAX_DEPTH:
                    os.close(child)
                    raise TooDeep(f"directories nested more than {MAX_DEPTH} levels deep")
                try:
                    stack.append((child, os.scandir(child)))
                except OSError:
                    os.close(child)
        finally:
            for fd, entries in stack:
                entries.close()
                os.close(fd)

    def _entry(self, entry: os.DirEntry[str], dir_fd: int, device: int) -> int | None:
        """Count one entry; for a directory on the same filesystem, an open descriptor of it to descend."""
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return None
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in self.seen:
                return None
            self.seen.add((info.st_dev, info.st_ino))
        self.total += _charge(entry.name, info, dir_fd)
        if not stat.S_ISDIR(info.st_mode) or info.st_dev != device:
            return None
        try:
            return os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            return None


def _charge(name: str, info: os.stat_result, dir_fd: int) -> int:
    allocated = int(info.st_blocks) * 512
    if allocated >= BLOCK:
        return allocated
    if allocated == 0 and stat.S_ISREG(info.st_mode) and _metacopy(name, dir_fd):
        return 0
    return BLOCK


def _metacopy(name: str, dir_fd: int) -> bool:
    try:
        os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", METACOPY, follow_symlinks=False)
    except OSError:
        return False
    return True
