"""Per-instance control groups for the local runtime: limits, freeze/thaw, kill-all.

Works with cgroup v1 (one hierarchy per controller, as on the test VMs) and cgroup v2 (unified,
needs a delegated subtree). Instance groups are created *below the controller's own group*
(`<own group>/spaceport/<instance>`), so whatever supervises the controller still sees its apps.
When neither works, `Cgroups.available` is False and the local runtime falls back to rlimits and
SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from controller.runtimes import procs

V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    pids: int
    cpu: float


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(fstype, mountpoint, options) for every cgroup mount."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            found.append((parts[2], parts[1], set(parts[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """controller name ('' for v2) -> this process's group path."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            paths[name] = path
    return paths


def _probe(base: Path) -> str:
    """'' if a child group can be created under base, else why not."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as exc:
        return f"cannot create cgroups under {base}: {exc.strerror}"
    return ""


class Cgroups:
    """Finds where instance groups can live and manages them by instance name."""

    def __init__(self, prefix: str = "spaceport") -> None:
        self.version = 0
        self.bases: dict[str, Path] = {}
        self.reason = ""
        self._detect(prefix)

    @property
    def available(self) -> bool:
        return self.version != 0

    def _detect(self, prefix: str) -> None:
        mounts, own = _mounts(), _own_paths()
        v1 = {}
        for fstype, point, opts in mounts:
            for ctrl in V1_CONTROLLERS:
                if fstype == "cgroup" and ctrl in opts and ctrl in own:
                    v1[ctrl] = Path(point) / own[ctrl].lstrip("/") / prefix
        if len(v1) == len(V1_CONTROLLERS):
            problems = [p for p in (_probe(b) for b in v1.values()) if p]
            if not problems:
                self.version, self.bases = 1, v1
                return
            self.reason = problems[0]
        for fstype, point, _ in mounts:
            if fstype == "cgroup2" and self._try_v2(Path(point), own.get("", "/"), prefix):
                return
        self.reason = self.reason or "no writable cgroup hierarchy with memory, pids, cpu and freezer"

    def _try_v2(self, point: Path, own: str, prefix: str) -> bool:
        ctrl_file = point / "cgroup.controllers"
        if not ctrl_file.exists() or not set(V2_CONTROLLERS) <= set(ctrl_file.read_text().split()):
            return False
        base = point / own.lstrip("/") / prefix
        if _probe(base):
            return False
        try:
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in V2_CONTROLLERS))
        except OSError as exc:
            self.reason = f"cgroup v2 controllers cannot be delegated to {base}: {exc.strerror}"
            return False
        self.version, self.bases = 2, {"": base}
        return True

    def dirs(self, name: str) -> list[Path]:
        return [base / name for base in self.bases.values()]

    def create(self, name: str, limits: Limits) -> list[Path]:
        """Create (or update) the groups; returns the cgroup.procs files a process writes itself to."""
        for base in self.bases.values():
            base.mkdir(parents=True, exist_ok=True)
        if self.version == 2:
            (self.bases[""] / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in V2_CONTROLLERS))
        for directory in self.dirs(name):
            directory.mkdir(exist_ok=True)
        if self.version == 1:
            self._write(1, "memory", "memory.limit_in_bytes", str(limits.memory_bytes), name)
            self._write(1, "pids", "pids.max", str(limits.pids), name)
            self._write(1, "cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US), name)
            self._write(1, "cpu", "cpu.cfs_quota_us", str(int(limits.cpu * CPU_PERIOD_US)), name)
        else:
            self._write(2, "", "memory.max", str(limits.memory_bytes), name)
            self._write(2, "", "pids.max", str(limits.pids), name)
            self._write(2, "", "cpu.max", f"{int(limits.cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}", name)
        return [d / "cgroup.procs" for d in self.dirs(name)]

    def _write(self, version: int, ctrl: str, file: str, value: str, name: str) -> None:
        key = ctrl if version == 1 else ""
        (self.bases[key] / name / file).write_text(value)

    def pids(self, name: str) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs(name):
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
        return found

    def _freezer_dir(self, name: str) -> Path:
        return self.bases["freezer" if self.version == 1 else ""] / name

    def set_frozen(self, name: str, frozen: bool, timeout: float = 10.0) -> None:
        directory = self._freezer_dir(name)
        if self.version == 1:
            (directory / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
        else:
            (directory / "cgroup.freeze").write_text("1" if frozen else "0")
        deadline = time.monotonic() + timeout
        while self.is_frozen(name) != frozen and time.monotonic() < deadline:
            time.sleep(0.01)

    def is_frozen(self, name: str) -> bool:
        directory = self._freezer_dir(name)
        try:
            if self.version == 1:
                return (directory / "freezer.state").read_text().strip() == "FROZEN"
            events = (directory / "cgroup.events").read_text().split()
            return "frozen" in events and events[events.index("frozen") + 1] == "1"
        except OSError:
            return False

    def kill(self, name: str, timeout: float = 10.0) -> None:
        """SIGKILL every process of the instance (frozen first so nothing forks meanwhile) and wait until
        they are gone: a killed process takes a while to exit (its memory torn down, its devices closed), and
        a stopped instance must hold nothing (a ZeroGPU worker's GPU, a port) by the time its stop returns."""
        if not any(d.exists() for d in self.dirs(name)):
            return
        self.set_frozen(name, True)
        for pid in self.pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.set_frozen(name, False)
        deadline = time.monotonic() + timeout
        while any(procs.is_alive(pid, None) for pid in self.pids(name)) and time.monotonic() < deadline:
            time.sleep(0.01)

    def remove(self, name: str) -> None:
        for directory in self.dirs(name):
            with contextlib.suppress(FileNotFoundError):
                for _ in range(100):
                    try:
                        directory.rmdir()
                        break
                    except OSError:  # still has (dying) processes
                        time.sleep(0.02)
        for base in self.bases.values():  # the runtime's own group, once its last instance is gone
            with contextlib.suppress(OSError):
                base.rmdir()
