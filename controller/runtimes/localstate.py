"""On-disk record of one local instance, so a restarted controller can adopt it.

Layout under the runtime's state dir (mode 0700, never visible to apps):
    instances/<name>/state.json   this record (no env values: secrets are not written to disk here)
    instances/<name>/app.log      stdout+stderr of the app
    instances/<name>/exit         exit code written by the supervisor when the app ends
    instances/<name>/home/        the app's private writable home (kept by stop, deleted by remove)
    instances/<name>/tmp/         its TMPDIR when not sandboxed
    instances/<name>/etc/         generated passwd/group for the sandbox
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


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
