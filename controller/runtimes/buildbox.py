"""The build sandbox (builder.sandbox.BuildSandbox) for venv builds: bubblewrap, a per-owner uid, limits,
and a network that reaches package indexes only.

What a build step (uv venv / uv pip install, and so every build backend and sdist it runs) sees:
* filesystem: /usr and a minimal /etc read-only (sandbox.ETC_FILES, a generated passwd/group), the
  uv binary and the base interpreter read-only, the `writable` directories the builder names (the new
  venv at its final-ish host path, the owner's uv cache, a scratch home/tmp, a throwaway copy of the
  source) and the `readonly` ones (the source). Not the data dir, not other spaces, not the controller.
* identity: the owner's build uid (sandbox.space_uid with key `build|<data dir>|<owner>`, so distinct
  from every app uid and from other owners' builds), set by setpriv inside after bwrap made the
  mounts; no capabilities, no_new_privs, its own PID namespace (every process dies with the step).
* limits: prlimit (CPU seconds, file size, open files, processes per uid, no core dumps) and, when
  cgroups work here, a memory/pids/cpu cgroup per build; the builder's wall-clock time limit.
* network: its own namespace with no route out (buildnet.create_build); only the build's own egress
  proxy (egress.py) on the slot's host address, which tunnels CONNECT to allowed index hosts.

Host-side launchers are absolute paths with a fixed environment; the step's environment is set
inside with bwrap --clearenv/--setenv. `open_build_sandbox` builds one for one build and tears it down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import BUILD_ERROR, BuildFailure
from controller.config import Settings
from controller.runtimes import buildnet, netns, procs, sandbox
from controller.runtimes.cgroups import Cgroups, Limits
from controller.runtimes.egress import DEFAULT_ALLOW, EgressProxy

log = logging.getLogger(__name__)

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
PRLIMIT = "/usr/bin/prlimit"
NSENTER = "/usr/bin/nsenter"
SH = "/bin/sh"
CP = "/bin/cp"
SEED_PRIVATE = ("CACHEDIR.TAG",)
HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
JOIN_CGROUPS = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
TOOLS = (BWRAP, SETPRIV, PRLIMIT, NSENTER, SH)
INDEX_ENV = ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_FIND_LINKS")


@dataclass(frozen=True)
class BuildLimits:
    cpu_seconds: int = 3600
    memory_bytes: int = 4 * 1024**3
    file_bytes: int = 4 * 1024**3
    pids: int = 1024
    nofile: int = 4096
    tmp_bytes: int = 512 * 1024**2
    cpus: float = 2.0


@dataclass(frozen=True)
class BuildBoxConfig:
    registry: Path  # machine-wide uid/slot tables (same as the local runtime's)
    identity_dir: Path  # root-owned: generated passwd/group per uid
    protected: tuple[Path, ...]  # never bound (data dir secrets, repos, logs...)
    key_prefix: str  # usually the data dir: builds of different sites get different uids
    allow_hosts: tuple[str, ...]
    limits: BuildLimits = BuildLimits()
    network: bool = True  # False only in unit tests of the argv


@dataclass
class BubblewrapBuildSandbox:
    """One build of one owner: uid, identity files, network slot, egress proxy and cgroup."""

    config: BuildBoxConfig
    owner: str
    log: Callable[[str], None]
    uid: int = 0
    slot: buildnet.BuildSlot | None = None
    proxy: EgressProxy | None = None
    cgroup_procs: tuple[str, ...] = ()
    _name: str = field(default_factory=lambda: f"build-{uuid.uuid4().hex[:12]}")
    _cgroups: Cgroups | None = None
    _started: bool = False

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> BubblewrapBuildSandbox:
        """Cheap: the uid, namespace, proxy and cgroup are set up on first use, so a build that reuses an
        environment (a code-only push) pays nothing for them."""
        return self

    def _ensure(self) -> None:
        if self._started:
            return
        self._started = True
        self.uid = sandbox.space_uid(self.config.registry, f"build|{self.config.key_prefix}|{self.owner}")
        sandbox.write_identity(self.etc_dir, self.uid)
        if self.config.network:
            self.slot = build_slot(self.config.registry, self._slot_key)
            buildnet.ensure_build_firewall()
            buildnet.create_build(self.slot)
            self.proxy = EgressProxy(self.slot.host_ip, buildnet.BUILD_PROXY_PORT, self.config.allow_hosts, self.log).start()
        cgroups = Cgroups(prefix="spaceport-builds")
        if cgroups.available:
            lim = self.config.limits
            self.cgroup_procs = tuple(str(p) for p in cgroups.create(
                self._name, Limits(memory_bytes=lim.memory_bytes, pids=lim.pids, cpu=lim.cpus)))
            self._cgroups = cgroups

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self._cgroups is not None:
            self._cgroups.kill(self._name)
            self._cgroups.remove(self._name)
        if self.slot is not None:
            netns.delete(self.slot)
            release_build_slot(self.config.registry, self._slot_key)

    @property
    def _slot_key(self) -> str:
        pid = os.getpid()
        return f"{pid}:{procs.start_time(pid)}|{self._name}"

    @property
    def etc_dir(self) -> Path:
        return self.config.identity_dir / str(self.uid)

    # ---------------------------------------------------------------- BuildSandbox
    def refused(self) -> list[str]:
        """The egress proxy's refusals so far (build log lines), for a failed step's cause."""
        return list(self.proxy.refused) if self.proxy is not None else []

    def describe(self) -> str:
        self._ensure()
        egress = f"egress only to {', '.join(self.config.allow_hosts)} via proxy" if self.slot else "no network"
        limits = "cgroup + rlimits" if self.cgroup_procs else "rlimits"
        return f"bubblewrap, uid {self.uid}, no view of the data dir or other spaces, {egress}, {limits}"

    def prepare(self, path: Path, seed: Path | None = None) -> None:
        """Make `path` (a fresh dir, or a tree the builder just copied) the build uid's; a fresh one may be
        seeded from a trusted cache by hardlinks.

        A hardlinked file's inode is the seed's (and every other owner's cache seeded from it): it is never
        chowned or chmodded here, so it stays root-owned and read-only to the build uid. Directories, and
        the files uv opens for writing (markers, locks), become the build uid's own; so does any shared
        file not owned by root (a seed polluted elsewhere is never trusted in place). Concurrent builds of
        one owner share the cache: preparing is serialized per path, and the top directory changes owner
        last, so nobody starts on a half-seeded cache."""
        self._ensure()
        # Only a seeded cache is shared by concurrent builds (of one owner): lock it, leave no lock files elsewhere.
        lock = sandbox.locked(path.parent / f".{path.name}.prepare.lock") if seed is not None else contextlib.nullcontext()
        with lock:
            info = path.lstat()
            if info.st_uid == self.uid and not stat.S_ISLNK(info.st_mode):
                return
            if seed is not None and seed.is_dir() and not any(path.iterdir()):
                _link_seed(seed, path)
            copied = sum(self._own(entry) for entry in _walk(path) if entry != path)
            if copied:
                log.warning("%s: %d shared cache files were not root-owned or were writable by others; the build got "
                            "private copies", path, copied)
            os.lchown(path, self.uid, self.uid)
            os.chmod(path, 0o700)  # other owners' builds cannot even read it

    def _own(self, entry: Path) -> bool:
        """Give one entry to the build uid without touching a shared inode; True if a polluted shared file
        was replaced by a private copy."""
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            return False  # a link's owner grants nothing; the build can replace it (it owns the directory)
        if stat.S_ISDIR(info.st_mode) or info.st_nlink == 1:
            os.lchown(entry, self.uid, self.uid)
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        # uv opens these for writing (markers, and lock files it creates world-writable on purpose)
        private = entry.name.startswith(".") or entry.name.endswith(".lock") or entry.name in SEED_PRIVATE
        polluted = info.st_uid != 0 or bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
        if private or polluted:
            _private_copy(entry, self.uid)
        return polluted and not private

    def seal(self, path: Path) -> None:
        """Root-owned, world-readable, writable by no one else, no setuid/setgid: no build uid can change
        it afterwards, every app uid can read it."""
        for entry in _walk(path):
            info = entry.lstat()
            os.lchown(entry, 0, 0)
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = 0o755 if stat.S_ISDIR(info.st_mode) or info.st_mode & 0o100 else 0o644
            os.chmod(entry, mode)

    def wrap(self, argv: Sequence[str], *, writable: Mapping[Path, Path], readonly: Sequence[Path],
             env: Mapping[str, str], cwd: Path) -> tuple[list[str], dict[str, str]]:
        self._ensure()
        inner = dict(env)
        if self.slot is not None:
            proxy = f"http://{self.slot.host_ip}:{buildnet.BUILD_PROXY_PORT}"
            inner |= {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
                      "ALL_PROXY": proxy, "NO_PROXY": ""}
        inner |= {k: v for k, v in os.environ.items() if k in INDEX_ENV}  # the admin's index settings
        bwrap = bwrap_build_argv(self.uid, self.etc_dir, writable, [cwd, *readonly], self.config.protected,
                                 cwd, inner, list(argv), self.config.limits)
        lim = self.config.limits
        rlimits = [PRLIMIT, f"--cpu={lim.cpu_seconds}", f"--fsize={lim.file_bytes}", f"--nofile={lim.nofile}",
                   f"--nproc={lim.pids}", "--core=0", "--"]
        net = [NSENTER, f"--net={self.slot.netns_path}", "--"] if self.slot is not None else []
        head = [SH, "-c", JOIN_CGROUPS, "spaceport-build", *self.cgroup_procs, "--"] if self.cgroup_procs else []
        return [*head, *net, *rlimits, *bwrap], dict(HOST_ENV)


def _link_seed(seed: Path, path: Path) -> None:
    done = subprocess.run([CP, "-al", "--", f"{seed}/.", str(path)], env=HOST_ENV, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        log.warning("seeding %s from %s failed: %s", path, seed, done.stderr.strip())


def _private_copy(entry: Path, uid: int) -> None:
    """Replace a hardlink by a copy of its own, owned by uid (the shared inode is left as it was)."""
    tmp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.copy")
    shutil.copy2(entry, tmp, follow_symlinks=False)
    os.chmod(tmp, stat.S_IMODE(tmp.lstat().st_mode) & 0o755)
    os.lchown(tmp, uid, uid)
    os.replace(tmp, entry)


def _walk(root: Path) -> Iterator[Path]:
    """root and everything below it, never following symlinks."""
    yield root
    if root.is_symlink() or not root.is_dir():
        return
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in (*dirs, *files):
            yield Path(top) / name


def check_binds(paths: Sequence[Path], protected: Sequence[Path]) -> None:
    """Refuse binding / or anything inside a protected path (protected paths deeper inside are masked)."""
    for path in paths:
        resolved = path.resolve()
        if resolved == Path("/"):
            raise RuntimeError("the whole filesystem cannot be exposed to a build")
        if any(resolved.is_relative_to(p) for p in protected):
            raise RuntimeError(f"{path} cannot be exposed to a build: it is inside a protected path")


def bwrap_build_argv(uid: int, etc_dir: Path, writable: Mapping[Path, Path], readonly: Sequence[Path],
                     protected: Sequence[Path], cwd: Path, env: Mapping[str, str], command: list[str],
                     limits: BuildLimits, exists: Callable[[str], bool] = os.path.exists) -> list[str]:
    """bwrap ... -- setpriv ... -- command for one build step (pure: tested without running)."""
    check_binds([*writable, *writable.values(), *readonly], protected)
    args = [BWRAP, "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    args += [a for link in sandbox.USR_LINKS if exists(f"/usr/{link}") for a in ("--symlink", f"usr/{link}", f"/{link}")]
    args += ["--proc", "/proc", "--dev", "/dev", "--dir", "/etc", "--dir", "/home", "--dir", "/run"]
    args += sandbox._etc_args(etc_dir, exists)
    args += ["--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    args += ["--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]
    ro = list(dict.fromkeys(p for p in readonly if p not in writable.values()))
    args += sandbox._parent_dirs([*ro, *writable.values()])
    for path in ro:
        args += ["--ro-bind", str(path), str(path)]
    for host, inside in writable.items():
        args += ["--bind", str(host), str(inside)]
    args += sandbox._mask_args(tuple(protected), [Path("/usr"), Path("/etc"), *ro, *writable.values()])
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "build"]
    args += ["--clearenv", *[a for k, v in sorted(env.items()) for a in ("--setenv", k, v)]]
    args += ["--chdir", str(cwd), "--"]
    drop = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
    return args + drop + command


# ---------------------------------------------------------------- slots and availability
def build_slot(registry: Path, key: str) -> buildnet.BuildSlot:
    with sandbox.locked(registry / "build-slots.lock"):
        table = registry / "build-slots.json"
        _prune_dead(table)
        return buildnet.BuildSlot(sandbox._allocate(table, key, 0, buildnet.MAX_BUILD_SLOT))


def release_build_slot(registry: Path, key: str) -> None:
    with sandbox.locked(registry / "build-slots.lock"):
        sandbox._release(registry / "build-slots.json", key)


def _prune_dead(table: Path) -> None:
    """Slots of builds whose worker process is gone (key = 'pid:start|name')."""
    data: dict[str, int] = json.loads(table.read_text()) if table.exists() else {}
    dead = {k: v for k, v in data.items() if not _owner_alive(k)}
    for index in dead.values():
        netns.delete(buildnet.BuildSlot(index))
    if dead:
        table.write_text(json.dumps({k: v for k, v in data.items() if k not in dead}, indent=1, sort_keys=True))


def _owner_alive(key: str) -> bool:
    pid, _, start = key.partition("|")[0].partition(":")
    return pid.isdigit() and procs.is_alive(int(pid), int(start) if start.isdigit() else None)


def build_sandbox_status() -> sandbox.SandboxStatus:
    """Can builds run sandboxed here? (root, the tools, namespaces)."""
    missing = [tool for tool in TOOLS if not os.access(tool, os.X_OK)]
    if os.geteuid() == 0 and missing:
        return sandbox.SandboxStatus(False, f"missing tools: {', '.join(missing)}",
                                     "apt-get install bubblewrap util-linux iproute2 iptables")
    return sandbox.sandbox_status()


@contextlib.contextmanager
def open_build_sandbox(config: BuildBoxConfig, owner: str, log: Callable[[str], None]) -> Iterator[BubblewrapBuildSandbox]:
    box = BubblewrapBuildSandbox(config, owner, log)
    try:
        yield box.open()
    finally:
        box.close()


# ---------------------------------------------------------------- from settings
@dataclass(frozen=True)
class BuildIsolation:
    """What services/builds.py passes to the builder for one build."""

    sandbox: BubblewrapBuildSandbox | None = None
    network: str | None = None
    container_limits: dict[str, int] | None = None


def allow_hosts(extra: str, environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """pypi.org, files.pythonhosted.org, SPACEPORT_BUILD_EGRESS_ALLOW and the admin's index URLs' hosts."""
    from urllib.parse import urlsplit

    hosts = [*DEFAULT_ALLOW, *(h.strip() for h in extra.split(",") if h.strip())]
    for name in INDEX_ENV:
        for url in environ.get(name, "").split():
            host = urlsplit(url).hostname
            if host:
                hosts.append(host)
    return tuple(dict.fromkeys(hosts))


def build_box_config(settings: Settings, registry: Path = Path("/run/spaceport")) -> BuildBoxConfig:
    from controller.runtimes.factory import protected_paths

    limits = BuildLimits(cpu_seconds=int(settings.build_time_limit * max(1.0, settings.build_cpus)) + 60,
                         memory_bytes=settings.build_memory_mb * 1024 * 1024, cpus=settings.build_cpus)
    return BuildBoxConfig(registry=registry, identity_dir=settings.artifacts_dir / "build-identity",
                          protected=tuple(protected_paths(settings)), key_prefix=str(settings.data_dir),
                          allow_hosts=allow_hosts(settings.build_egress_allow), limits=limits)


def unsandboxed_reason(settings: Settings) -> str | None:
    """Why venv builds cannot be sandboxed here (None: they can). Raises BuildFailure for sandbox='bwrap'."""
    if settings.sandbox == "none":
        return "the sandbox is disabled by configuration (SPACEPORT_SANDBOX=none)"
    status = build_sandbox_status()
    if status.available:
        return None
    if settings.sandbox == "bwrap":
        raise BuildFailure(BUILD_ERROR, f"builds cannot be sandboxed on this server: {status.reason}. "
                                        f"Ask the admin to fix it ({status.fix}).")
    return f"{status.reason} ({status.fix})"


@contextlib.contextmanager
def build_isolation(settings: Settings, owner: str, log_line: Callable[[str], None], kind: str,
                    client: Any = None) -> Iterator[BuildIsolation]:
    """The sandbox (venv) or build network and limits (image) for one build of `owner`."""
    if kind == "image":
        network = ensure_build_network(client, settings.build_network) if client is not None else None
        memory = settings.build_memory_mb * 1024 * 1024
        yield BuildIsolation(network=network, container_limits={
            "memory": memory, "memswap": memory, "cpushares": max(2, int(1024 * settings.build_cpus))})
        return
    reason = unsandboxed_reason(settings)
    if reason is not None:
        warning = (f"SECURITY WARNING: this build runs UNSANDBOXED as {'root' if os.geteuid() == 0 else 'the controller'} "
                   f"on the host: {reason}. Only trusted users may push here.")
        log.warning("%s (owner %s)", warning, owner)
        log_line(warning)
        yield BuildIsolation()
        return
    with open_build_sandbox(build_box_config(settings), owner, log_line) as box:
        yield BuildIsolation(sandbox=box)


def ensure_build_network(client: Any, name: str) -> str:
    """The docker network for RUN steps: a bridge without inter-container traffic; when its bridge is on this
    host (and we are root), firewalled off the host and private ranges. Returns the network name."""
    import docker.errors

    found = client.networks.list(names=[name])
    if not found:
        with contextlib.suppress(docker.errors.APIError):  # a concurrent build may make it first
            client.networks.create(name, driver="bridge", options={"com.docker.network.bridge.enable_icc": "false"},
                                   check_duplicate=True, labels={"spaceport.network": "build"})
        found = client.networks.list(names=[name])
    if not found:
        raise BuildFailure(BUILD_ERROR, f"cannot create the docker build network {name}; ask the admin to check dockerd")
    network = found[0]
    network.reload()
    bridge = (network.attrs.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{network.id[:12]}"
    if os.geteuid() == 0 and Path("/sys/class/net", bridge).exists():
        try:
            buildnet.ensure_docker_build_firewall(bridge)
        except netns.NetworkSetupError as exc:
            raise BuildFailure(BUILD_ERROR, f"cannot firewall the build network {name}: {exc}") from exc
    else:
        log.warning("build network %s (bridge %s) is not on this host: its firewall is the docker host's admin's job",
                    name, bridge)
    return name
