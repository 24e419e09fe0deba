"""The local runtime's sandbox: bubblewrap + a per-space uid + a private network namespace.

What an app sees (see `bwrap_argv`):
* filesystem: /usr (and the /bin, /lib*, /sbin symlinks) read-only, a minimal /etc (resolver, CA
  certificates, ld.so, mime types, a generated passwd/group), its venv read-only at its host path (venv
  scripts carry absolute shebangs), the venv's base interpreter read-only, a private writable home
  (kept across restarts) and a size-limited tmpfs /tmp. Its code is /home/user/app, writable, owned by
  the app and its working directory, as on the hosted platform: an overlay (see APP_SETUP) whose lower
  layer is the shared read-only source snapshot and whose upper layer is the instance's own directory,
  emptied on every start (the hosted disk is ephemeral too), so no write ever reaches the snapshot
  other instances, duplicates and rebuilds run from. Its venv is writable too (apps `pip install` or
  write into their own site-packages at start, as the hosted images allow): an overlay at the venv's
  path whose lowers are the instance's directory skeleton of the venv (every directory, owned by the
  app's uid, made once per instance: no chown of files on any wake) over the sealed shared venv, and
  whose upper is the instance's own, emptied on every start. New files, new directories, replacing or
  deleting files work; writing an existing file in place is refused (its inode stays root-owned).
  Its mounts (controller.services.volumes): its persistent storage bound read-write at /data (the host
  directory given to its uid by `give_storage`) and read-only volumes (another space's files) at their
  paths; only those directories, never their parents, so no link the app makes there leads anywhere but
  into its own mount namespace. Nothing else: not the data dir, not other spaces,
  not the controller's code. `protected_paths` that would fall inside a bound directory are masked.
* identity: its own unprivileged uid/gid (100000 + a per-space number, never root, never the
  controller's uid), set with setpriv *inside* the sandbox after bwrap (running as root) has built the
  mounts; all capabilities dropped, no_new_privs.
* processes: its own PID namespace (it cannot see or signal host processes); no --die-with-parent,
  instances outlive the controller.
* network: its own network namespace (see netns.py): it serves its port on its own address and
  reaches the internet, but cannot open connections to the host (controller, database, Redis, ...)
  nor to other apps.

`sandbox_status()` says whether all this works here, and if not why and how to fix it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from controller.runtimes import hosttools, netns
from controller.runtimes.appenv import APP_DIR, APP_HOME
from controller.runtimes.base import Mount

UID_BASE = 100_000
UID_MAX = 165_535
APP_STAGING = "/run/spaceport-app"  # lower (the snapshot) and layer (upper + work) until the overlay is up
VENV_STAGING = "/run/spaceport-venv"  # lower (the sealed venv), dirs (its skeleton) and layer, likewise
# Runs as root inside the sandbox, before setpriv, with fixed argv and no owner input but the file tree:
# the overlay with metacopy=on makes `chown -R` copy up metadata only (no file data is copied until the
# app writes it); without metacopy the chown copies the data; without overlayfs the code is copied.
# Then the staging mounts go away (the overlay keeps its own references), and the app starts in its dir.
APP_SETUP = r"""
uid=$1; venv=$2; app=$3; shift 3
if [ -n "$venv" ]; then
  v=@VSTAGING@
  mount -t overlay -o "lowerdir=$v/dirs:$v/lower,upperdir=$v/layer/upper,workdir=$v/layer/work" spaceport-venv "$venv" \
   || echo "spaceport: overlayfs unavailable: the app's venv stays read-only" >&2
  umount "$v/dirs" && umount "$v/lower" && umount -l "$v/layer" || exit 125
  rmdir "$v/dirs" "$v/lower" "$v/layer" "$v" 2>/dev/null
fi
[ -n "$app" ] || exec "$@"
s=@STAGING@; l=$s/lower; u=$s/layer/upper; w=$s/layer/work; a=@APP@
mount -t overlay -o "lowerdir=$l,upperdir=$u,workdir=$w,metacopy=on" spaceport-app "$a" 2>/dev/null \
 || mount -t overlay -o "lowerdir=$l,upperdir=$u,workdir=$w" spaceport-app "$a" \
 || { echo "spaceport: overlayfs unavailable: copying the app's code into @APP@" >&2;
      cp -a "$l/." "$u/" && mount --bind "$u" "$a"; } \
 || { echo "spaceport: cannot set up /home/user/app" >&2; exit 125; }
chown -Rh "$uid:$uid" "$a" && umount "$l" && umount -l "$s/layer" || exit 125
rmdir "$l" "$s/layer" "$s" 2>/dev/null
cd "$a" || exit 125
exec "$@"
""".replace("@STAGING@", APP_STAGING).replace("@APP@", APP_DIR).replace("@VSTAGING@", VENV_STAGING)
ETC_FILES = (
    "resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "ld.so.cache", "ld.so.conf",
    "ld.so.conf.d", "ssl", "ca-certificates", "ca-certificates.conf", "mime.types", "localtime",
    "timezone", "alternatives", "os-release", "debian_version", "protocols", "services", "fonts",
)  # fmt: skip
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
NVIDIA_SHARED = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
ASCEND_SHARED = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
ASCEND_DRIVER = "/usr/local/Ascend/driver"


@dataclass(frozen=True)
class SandboxStatus:
    available: bool
    reason: str
    fix: str


@dataclass(frozen=True)
class SandboxPlan:
    """Everything bwrap needs for one instance (pure data; `bwrap_argv` turns it into argv)."""

    uid: int
    home: Path
    etc_dir: Path  # holds the generated passwd and group
    ro_paths: tuple[Path, ...]  # source, venv, interpreter prefix: bound read-only at the same path
    protected: tuple[Path, ...]
    tmp_size_bytes: int
    workdir: str = APP_HOME
    hostname: str = "space"
    devices: tuple[str, ...] = ()
    extra_ro: tuple[str, ...] = ()
    app_source: Path | None = None  # shown writable at APP_DIR (and made the working directory)
    app_layer: Path | None = None  # holds upper/ and work/ of that overlay (emptied by the caller)
    venv: Path | None = None  # made writable at its path (one of ro_paths) by an overlay:
    venv_dirs: Path | None = None  # its directory skeleton owned by the app (prepare_venv_layer)
    venv_layer: Path | None = None  # upper/ and work/ of that overlay (emptied by the caller)
    mounts: tuple[Mount, ...] = ()  # persistent storage (read-write) and volumes (read-only) at their targets


def _bwrap_works() -> str:
    """'' if bwrap can build a namespace here, else its error."""
    try:
        done = subprocess.run(
            [hosttools.path("bwrap"), "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
             "--", "/usr/bin/setpriv", f"--reuid={UID_BASE}", f"--regid={UID_BASE}", "--clear-groups", "/bin/true"],
            capture_output=True, text=True, timeout=20, check=False, env=hosttools.HOST_ENV,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired, hosttools.ToolMissing) as exc:
        return str(exc)
    return "" if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


def sandbox_status() -> SandboxStatus:
    """Can the local runtime isolate untrusted apps on this machine?"""
    if os.geteuid() != 0:
        return SandboxStatus(False, "the controller is not running as root, so it cannot give apps their own uid "
                             "and network namespace", "run Spaceport as root (or in its container image), "
                             "or use the docker runtime (SPACEPORT_RUNTIME=docker)")  # fmt: skip
    missing = hosttools.missing("bwrap", "setpriv", "prlimit", "sh") + netns.tools_missing()
    if missing:
        return SandboxStatus(False, f"missing tools: {', '.join(missing)}",
                             "apt-get install bubblewrap util-linux iproute2 iptables")  # fmt: skip
    error = _bwrap_works()
    if error:
        return SandboxStatus(False, f"bubblewrap cannot create namespaces here: {error}",
                             "allow namespaces (sysctl kernel.unprivileged_userns_clone=1, or run outside "
                             "a restricted container) or use the docker runtime")  # fmt: skip
    return SandboxStatus(True, "bubblewrap sandbox with per-space uid, PID and network namespaces", "")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _allocate(table: Path, key: str, first: int, last: int) -> int:
    """Stable number for key from a JSON table (caller holds the lock)."""
    data: dict[str, int] = json.loads(table.read_text()) if table.exists() else {}
    if key in data:
        return data[key]
    used = set(data.values())
    value = next((n for n in range(first, last + 1) if n not in used), None)
    if value is None:
        raise RuntimeError(f"no free number left in {table}")
    data[key] = value
    tmp = table.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(table)
    return value


def _release(table: Path, key: str) -> None:
    data: dict[str, int] = json.loads(table.read_text()) if table.exists() else {}
    if data.pop(key, None) is not None:
        table.write_text(json.dumps(data, indent=1, sort_keys=True))


def space_uid(registry: Path, key: str) -> int:
    """The space's own uid: stable across restarts, distinct per space (and per controller on this
    machine: the registry is machine-wide), never 0 nor the controller's."""
    with locked(registry / "uids.lock"):
        uid = _allocate(registry / "uids.json", key, UID_BASE + 1, UID_MAX)
    if uid in (0, os.getuid()):
        raise RuntimeError(f"refusing uid {uid} for {key}")
    return uid


def instance_slot(registry: Path, key: str) -> netns.Slot:
    """Network slot: machine-wide (namespaces and interfaces are global kernel objects)."""
    with locked(registry / "slots.lock"):
        _prune_slots(registry / "slots.json")
        return netns.Slot(_allocate(registry / "slots.json", key, 0, netns.MAX_SLOT))


def _prune_slots(table: Path) -> None:
    """Reclaim slots of instances whose state is gone (a deleted data dir, a test's tmp dir)."""
    data: dict[str, int] = json.loads(table.read_text()) if table.exists() else {}
    stale = {k: v for k, v in data.items() if not (Path(k.partition("|")[0]) / "instances" / k.partition("|")[2]).exists()}
    for index in stale.values():
        netns.delete(netns.Slot(index))
    if stale:
        table.write_text(json.dumps({k: v for k, v in data.items() if k not in stale}, indent=1, sort_keys=True))


def release_slot(registry: Path, key: str) -> None:
    with locked(registry / "slots.lock"):
        _release(registry / "slots.json", key)


def write_identity(etc_dir: Path, uid: int) -> None:
    """passwd/group so getpwuid() and `whoami` work inside."""
    etc_dir.mkdir(parents=True, exist_ok=True)
    (etc_dir / "passwd").write_text(f"root:x:0:0:root:/root:/usr/sbin/nologin\nuser:x:{uid}:{uid}::{APP_HOME}:/bin/sh\n"
                                    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")  # fmt: skip
    (etc_dir / "group").write_text(f"root:x:0:\nuser:x:{uid}:\nnogroup:x:65534:\n")


def interpreter_prefix(venv: Path) -> Path | None:
    """The base Python a venv points to (pyvenv.cfg `home`), if it lives outside /usr."""
    cfg = venv / "pyvenv.cfg"
    if not cfg.exists():
        return None
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            prefix = Path(value.strip()).resolve().parent
            return None if prefix.is_relative_to("/usr") else prefix
    return None


def accelerator_devices(kind: str, ids: tuple[str, ...], exists: Callable[[str], bool] = os.path.exists) -> tuple[
        tuple[str, ...], tuple[str, ...]]:  # fmt: skip
    """(device nodes, read-only driver dirs) to expose for an accelerator assignment."""
    if kind.startswith("nvidia"):
        nodes = [f"/dev/nvidia{i}" for i in ids] + list(NVIDIA_SHARED)
        return tuple(n for n in nodes if exists(n)), ()
    if kind.startswith("ascend"):
        nodes = [f"/dev/davinci{i}" for i in ids] + list(ASCEND_SHARED)
        driver = (ASCEND_DRIVER,) if exists(ASCEND_DRIVER) else ()
        return tuple(n for n in nodes if exists(n)), driver
    return (), ()


def _etc_args(etc_dir: Path, exists: Callable[[str], bool]) -> list[str]:
    args: list[str] = []
    for item in ETC_FILES:
        if exists(f"/etc/{item}"):
            args += ["--ro-bind", f"/etc/{item}", f"/etc/{item}"]
    for item in ("passwd", "group"):
        args += ["--ro-bind", str(etc_dir / item), f"/etc/{item}"]
    return args


def _mask_args(protected: tuple[Path, ...], bound: list[Path]) -> list[str]:
    """Hide protected paths that a bound directory would otherwise expose."""
    args: list[str] = []
    for path in protected:
        if any(path.is_relative_to(b) for b in bound):
            args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    return args


def _parent_dirs(paths: list[Path]) -> list[str]:
    """World-traversable parents for bound paths (bwrap would copy restrictive host modes)."""
    parents = sorted({str(a) for p in paths for a in p.parents if a != Path("/")}, key=len)
    skip = {"/usr", "/etc", "/tmp", "/home", "/proc", "/dev", "/run"}
    return [a for d in parents if d not in skip for a in ("--perms", "0755", "--dir", d)]


def check_plan(plan: SandboxPlan) -> None:
    """Refuse a plan that would expose a protected path itself (or the whole filesystem); protected
    paths deeper inside a bound directory are masked instead."""
    for ro in plan.ro_paths:
        for path in plan.protected:
            if ro == Path("/") or ro.is_relative_to(path):
                raise RuntimeError(f"{ro} cannot be exposed to an app: it is protected ({path})")
    if plan.venv is not None:
        if plan.venv_dirs is None or plan.venv_layer is None or plan.venv not in plan.ro_paths:
            raise RuntimeError("a writable venv needs its skeleton and layer directories and a read-only bind")
        for path in plan.protected:
            if path.is_relative_to(plan.venv):
                raise RuntimeError(f"{plan.venv} cannot be the app's writable venv: it holds a protected path ({path})")
    for mount in plan.mounts:
        check_mount(mount, plan.protected)
    if plan.app_source is not None:  # an overlay's lower layer cannot be masked: nothing protected inside
        if plan.app_layer is None:
            raise RuntimeError("an app directory needs a layer directory for its writes")
        for path in plan.protected:
            if plan.app_source == Path("/") or plan.app_source.is_relative_to(path) or path.is_relative_to(plan.app_source):
                raise RuntimeError(f"{plan.app_source} cannot be the app's code: it holds or is protected ({path})")


SYSTEM_TARGETS = ("/usr", "/etc", "/proc", "/dev", "/home", "/run", "/tmp", "/bin", "/sbin", "/lib", "/lib64")


def check_mount(mount: Mount, protected: tuple[Path, ...]) -> None:
    """A mount binds one platform-made directory at a fresh absolute path: never a protected path or one
    holding it, never over the system's directories or the app's home (controller.domain.volumes checked
    the owner's path already; this is the sandbox's own line)."""
    source, target = Path(mount.source), mount.target
    if not source.is_absolute() or source == Path("/") or ".." in source.parts:
        raise RuntimeError(f"mount source {mount.source!r} must be an absolute directory")
    for path in protected:
        if source.is_relative_to(path) or path.is_relative_to(source):
            raise RuntimeError(f"{source} cannot be mounted into an app: it is or holds a protected path ({path})")
    if not target.startswith("/") or any(p in ("", ".", "..") for p in target[1:].split("/")):
        raise RuntimeError(f"mount target {target!r} must be a normalized absolute path")
    if target == "/" or any(target == t or target.startswith(t + "/") for t in SYSTEM_TARGETS):
        raise RuntimeError(f"mount target {target} is a system directory or inside one")


def _mount_args(mounts: tuple[Mount, ...]) -> list[str]:
    return [a for m in mounts for a in ("--ro-bind" if m.read_only else "--bind", m.source, m.target)]


def give_storage(path: Path, uid: int, gid: int | None = None) -> None:
    """Host side, before a start: the space's persistent storage directory owned by the app's uid (mode 0700),
    so it can write /data. When it was someone else's (another runtime's uid), everything in it is handed
    over too, walked by directory file descriptors without following any link the app left there (an old
    instance of the space may still be running and swapping entries: nothing outside the tree is touched)."""
    gid = uid if gid is None else gid
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeError(f"{path} is not a directory")
    if (info.st_uid, info.st_gid) != (uid, gid):
        for _top, dirs, files, top_fd in os.fwalk(path, follow_symlinks=False):
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(name, uid, gid, dir_fd=top_fd, follow_symlinks=False)
        os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, 0o700)  # a directory the platform made (checked above), not the app's


def bwrap_argv(plan: SandboxPlan, command: list[str], exists: Callable[[str], bool] = os.path.exists) -> list[str]:
    """bwrap ... -- setpriv ... -- command (pure: tested without running)."""
    check_plan(plan)
    args = [hosttools.path("bwrap"), "--ro-bind", "/usr", "/usr"]
    args += [a for link in USR_LINKS if exists(f"/usr/{link}") for a in ("--symlink", f"usr/{link}", f"/{link}")]
    args += ["--proc", "/proc", "--dev", "/dev", "--dir", "/etc", "--dir", "/home", "--dir", "/run"]
    args += _etc_args(plan.etc_dir, exists)
    args += ["--size", str(plan.tmp_size_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    args += ["--size", str(plan.tmp_size_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]  # multiprocessing locks
    args += ["--bind", str(plan.home), APP_HOME]
    args += _parent_dirs([*plan.ro_paths, *(Path(p) for p in plan.extra_ro)])
    for path in (*plan.ro_paths, *(Path(p) for p in plan.extra_ro)):
        args += ["--ro-bind", str(path), str(path)]
    args += [a for dev in plan.devices for a in ("--dev-bind", dev, dev)]
    args += _mount_args(plan.mounts)
    args += _mask_args(plan.protected, [Path("/usr"), Path("/etc"), *plan.ro_paths])
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", plan.hostname]
    setup: list[str] = []
    venv = app = ""
    if plan.venv is not None and plan.venv_dirs is not None and plan.venv_layer is not None:
        args += ["--ro-bind", str(plan.venv), f"{VENV_STAGING}/lower", "--ro-bind", str(plan.venv_dirs),
                 f"{VENV_STAGING}/dirs", "--bind", str(plan.venv_layer), f"{VENV_STAGING}/layer"]  # fmt: skip
        venv = str(plan.venv)
    if plan.app_source is not None and plan.app_layer is not None:
        args += ["--ro-bind", str(plan.app_source), f"{APP_STAGING}/lower", "--bind", str(plan.app_layer),
                 f"{APP_STAGING}/layer"]  # fmt: skip
        app = APP_DIR
    if venv or app:
        setup = ["/bin/sh", "-c", APP_SETUP, "spaceport-appdir", str(plan.uid), venv, app]
    args += ["--chdir", "/" if app else plan.workdir, "--"]  # APP_SETUP enters the app dir once it is mounted
    drop = ["/usr/bin/setpriv", f"--reuid={plan.uid}", f"--regid={plan.uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
    return args + setup + drop + command


def prepare_app_dir(home: Path, layer: Path, uid: int) -> None:
    """Host side, before a sandboxed start (the app is not running): an empty layer (writes of the last
    run are discarded) and a real directory home/app to mount on; whatever the app left there (a
    symlink, a file) is removed first, never followed."""
    shutil.rmtree(layer, ignore_errors=True)
    for part in ("upper", "work"):
        (layer / part).mkdir(parents=True, mode=0o700)
    os.chmod(layer, 0o700)
    target = home / "app"
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    target.mkdir(exist_ok=True)
    os.lchown(target, uid, uid)
    os.chmod(target, 0o755)


def prepare_venv_layer(venv: Path, dirs: Path, layer: Path, uid: int) -> None:
    """Host side, before a sandboxed start: an empty upper layer for the venv overlay (writes of the last run
    are discarded), its root the app's; and, once per instance, `dirs`: every directory of the sealed venv
    (same modes, symlinks skipped so a linked directory stays a link), owned by the app's uid, as the
    overlay's upper lower layer. Merged directories take their owner from it, so the app may create,
    replace and delete entries anywhere in its venv while every file inode stays the sealed one."""
    shutil.rmtree(layer, ignore_errors=True)
    for part in ("upper", "work"):
        (layer / part).mkdir(parents=True, mode=0o700)
    os.chmod(layer, 0o700)
    os.chown(layer / "upper", uid, uid)
    os.chmod(layer / "upper", stat.S_IMODE(venv.stat().st_mode))
    if dirs.is_dir():
        return
    tmp = dirs.with_name(f".{dirs.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for top, names, _files in os.walk(venv, followlinks=False):
        relative = os.path.relpath(top, venv)
        target = tmp if relative == "." else tmp / relative
        target.mkdir(mode=0o700)
        os.chown(target, uid, uid)
        os.chmod(target, stat.S_IMODE(os.lstat(top).st_mode) & 0o755)
        names[:] = [name for name in names if not os.path.islink(os.path.join(top, name))]
    tmp.rename(dirs)


def discard_app_writes(layer: Path) -> None:
    """After a stop: what the app wrote next to its code is gone, as on the hosted ephemeral disk."""
    shutil.rmtree(layer, ignore_errors=True)
