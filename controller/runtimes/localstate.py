"""On-disk record of one local instance, so a restarted controller can adopt it.

Layout under the runtime's state dir (mode 0700, never visible to apps):
    instances/<name>/state.json   this record (no env values: secrets are not written to disk here)
    instances/<name>/app.log      stdout+stderr of the app
    instances/<name>/exit         exit code written by the supervisor when the app ends
    instances/<name>/home/        the app's private writable home (kept by stop, deleted by remove)
    instances/<name>/tmp/         its TMPDIR when not sandboxed
    instances/<name>/etc/         generated passwd/group for the sandbox
    instances/<name>/app-layer/   upper/work dirs of the app's /home/user/app overlay (emptied every start)

What an app writes to disk is `InstanceDir.writable` (home, app-layer, tmp), measured by `disk_usage`.
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
    def writable(self) -> tuple[Path, ...]:
        """Everything the app itself can write to on the host's disk (its logs are capped separately)."""
        return (self.home, self.app_layer, self.tmp)

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


def disk_usage(roots: tuple[Path, ...] | list[Path], stop_after: int | None = None) -> int:
    """Bytes of disk the trees under `roots` take: allocated blocks (st_blocks, so a sparse file counts
    what it really holds, not its apparent size), each file or directory at least BLOCK (a million empty
    files cost inodes), hard links once, symlinks never followed, other filesystems not entered. An
    overlay metadata-only copy-up (the sandbox's chown of the app's code) holds no data and is free.
    Stops counting once the total passes `stop_after` (the caller only needs to know it is over)."""
    total, seen = 0, set()
    stack: list[tuple[str, int]] = []
    for root in roots:
        with contextlib.suppress(OSError):
            stack.append((str(root), os.lstat(root).st_dev))
    while stack:
        top, device = stack.pop()
        try:
            entries = os.scandir(top)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                total += _charge(entry.path, info)
                if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
                    stack.append((entry.path, device))
        if stop_after is not None and total > stop_after:
            break
    return total


def _charge(path: str, info: os.stat_result) -> int:
    allocated = int(info.st_blocks) * 512
    if allocated >= BLOCK:
        return allocated
    if allocated == 0 and stat.S_ISREG(info.st_mode) and _metacopy(path):
        return 0
    return BLOCK


def _metacopy(path: str) -> bool:
    try:
        os.getxattr(path, METACOPY, follow_symlinks=False)
    except OSError:
        return False
    return True
