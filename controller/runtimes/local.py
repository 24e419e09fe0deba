"""Local runtime: each instance is a process tree on this machine, sandboxed with bubblewrap.

Every instance runs under a tiny `sh` supervisor started in its own session (start_new_session), so
it outlives the controller. The supervisor joins the instance's cgroups, runs the app (through
prlimit, then nsenter + bwrap + setpriv when sandboxed) in the foreground and writes the app's exit
code to a file. Instances are found again from their state files (pid + kernel start time), so a
restarted controller adopts them without restarting anything.

Host side, everything runs as root by absolute path (hosttools) with a fixed environment: nothing the
space controls reaches the launcher. The app's environment (platform values, then the space's
variables and secrets, minus the names the platform owns) travels in an inherited memfd and is applied
by a two-line `sh` shim *after* setpriv has dropped to the app's uid, so it never appears in argv or
in a root process's environment. The app's stdout/stderr go through a pipe to the masking log relay
(logrelay.py, its own session, fixed env, secrets on another memfd), which appends to app.log.

start(spec) is idempotent: running with the same spec -> its endpoint; stopped with the same spec ->
started again in the same home (fast); existing with a different spec (artifact, env, hardware) ->
replaced (old one removed, home included).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from builder.artifact import VenvArtifact, artifact_to_dict
from controller.runtimes import hosttools, logrelay, netns, procs, sandbox
from controller.runtimes.appenv import APP_DIR, app_env, instance_labels, spec_hash, visible_devices_env
from controller.runtimes.base import Endpoint, InstanceSpec, InstanceStatus, Mount, RuntimeFailure, State
from controller.runtimes.cgroups import Cgroups, Limits
from controller.runtimes.localstate import InstanceDir, LocalRecord, disk_usage

log = logging.getLogger(__name__)

SandboxMode = Literal["auto", "bwrap", "none"]
SUPERVISOR = r"""
exitfile=$1; shift
while [ "$1" != "--" ]; do
  echo $$ > "$1" || { echo "spaceport: cannot join cgroup $1" >&2; exit 125; }; shift
done
shift
trap 'true' TERM INT HUP
"$@"
code=$?
echo "$code" > "$exitfile.tmp" && mv "$exitfile.tmp" "$exitfile"
exit "$code"
"""
# Runs as the app (after setpriv when sandboxed): loads the environment from the memfd it gets as stdin,
# empties it, then execs the app with stdin from /dev/null.
ENV_SHIM = '. /dev/fd/0 || exit 125; : > /dev/fd/0; exec "$@" < /dev/null'
SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
RELAY_DRAIN = 2.0  # seconds an exited app's relay gets to write its last lines before status reads them
LOG_ROTATE_BYTES = logrelay.LOG_ROTATE_BYTES
NOFILE = 8192
SANDBOX_TMP = "/tmp"


class LocalRuntime:
    name = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        sandbox: SandboxMode = "auto",
        bind_host: str = "127.0.0.1",
        protected_paths: list[Path] | None = None,
        stop_timeout: float = 10.0,
        registry: Path = Path("/run/spaceport"),
        egress_allow: tuple[str, ...] | str = (),
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.instances = self.state_dir / "instances"
        self.instances.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.bind_host = bind_host
        self.protected = tuple(Path(p).resolve() for p in [*(protected_paths or []), self.state_dir])
        self.stop_timeout = stop_timeout
        self.registry = registry
        try:
            self.egress_allow = netns.parse_allow(egress_allow)
        except ValueError as exc:
            raise RuntimeFailure(f"{exc}; fix SPACEPORT_EGRESS_ALLOW") from None
        self.sandbox_status = sandbox_mode_status(sandbox)
        self.sandboxed = sandbox != "none" and self.sandbox_status.available
        if sandbox == "bwrap" and not self.sandboxed:
            raise RuntimeFailure(f"sandbox unavailable: {self.sandbox_status.reason}; {self.sandbox_status.fix}")
        if sandbox == "auto" and not self.sandboxed:
            log.warning("local runtime NOT sandboxed: %s (%s)", self.sandbox_status.reason, self.sandbox_status.fix)
        self.cgroups = Cgroups(prefix="spaceport-" + hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10])
        try:  # absolute paths, found once on a fixed PATH: never whatever a PATH variable says
            self.tools = {name: hosttools.path(name) for name in ("sh", "prlimit")}
        except hosttools.ToolMissing as exc:
            raise RuntimeFailure(f"the local runtime cannot start apps: {exc}") from None
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._relays: dict[str, subprocess.Popen[bytes]] = {}
        self._firewall_ready = False

    # ---------------------------------------------------------------- contract
    async def start(self, spec: InstanceSpec) -> Endpoint:
        return await asyncio.to_thread(self._start, spec)

    async def stop(self, name: str) -> None:
        await asyncio.to_thread(self._stop, name)

    async def status(self, name: str) -> InstanceStatus:
        return await asyncio.to_thread(self._status, name)

    async def list(self) -> list[InstanceStatus]:
        return await asyncio.to_thread(self._list)

    async def freeze(self, name: str) -> None:
        await asyncio.to_thread(self._set_frozen, name, True)

    async def thaw(self, name: str) -> None:
        await asyncio.to_thread(self._set_frozen, name, False)

    async def remove(self, name: str) -> None:
        await asyncio.to_thread(self._remove, name)

    def logs(self, name: str, follow: bool) -> AsyncIterator[str]:
        return self._logs(name, follow)

    # ---------------------------------------------------------------- disk (issue 19)
    async def disk_usage(self, name: str, stop_after: int | None = None) -> int | None:
        """Bytes the instance's app wrote to disk (its home, /home/user/app's overlay layer, its TMPDIR
        when unsandboxed; a sandboxed /tmp is a size-limited tmpfs in memory), counted as allocated
        blocks; None when the instance is unknown. Counting stops once past stop_after."""
        return await asyncio.to_thread(self._disk_usage, name, stop_after)

    async def discard_writes(self, name: str) -> None:
        """Empty a stopped instance's home and tmp (never a running one's): frees an over-quota app's disk."""
        await asyncio.to_thread(self._discard_writes, name)

    def pid(self, name: str) -> int | None:
        """Supervisor pid (the instance's process group and session), for tests and diagnostics."""
        record = self._dir(name).read()
        return record.pid if record else None

    # ---------------------------------------------------------------- start
    def _dir(self, name: str) -> InstanceDir:
        try:
            return InstanceDir(self.instances, name)
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from exc

    def _start(self, spec: InstanceSpec) -> Endpoint:
        if not isinstance(spec.artifact, VenvArtifact):
            raise RuntimeFailure(f"the local runtime runs venv artifacts, not {spec.artifact.ref}")
        idir = self._dir(spec.name)
        with sandbox.locked(self.state_dir / "locks" / f"{spec.name}.lock"):
            record = idir.read()
            if record and record.spec_hash != spec_hash(spec):
                self._remove(spec.name)
                record = None
            if record and self._alive(record):
                return Endpoint(record.host, record.port)
            return self._spawn(spec, idir, record)

    def _spawn(self, spec: InstanceSpec, idir: InstanceDir, old: LocalRecord | None) -> Endpoint:
        artifact = spec.artifact
        assert isinstance(artifact, VenvArtifact)
        for path in (idir.path, idir.home, idir.tmp):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(idir.path, 0o700)
        uid, slot = self._identity(spec, idir)
        host, port, bind = self._address(artifact, slot)
        env, dropped = self._env(spec, artifact, port, bind, idir)
        command = [c.replace("{port}", str(port)).replace("{host}", bind) for c in artifact.command]
        if command and not os.path.isabs(command[0]) and (artifact.venv / "bin" / command[0]).exists():
            command[0] = str(artifact.venv / "bin" / command[0])
        self._prepare_mounts(spec, idir, uid)
        if uid is not None:
            sandbox.prepare_app_dir(idir.home, idir.app_layer, uid)
            sandbox.prepare_venv_layer(artifact.venv.resolve(), idir.venv_dirs, idir.venv_layer, uid)
            command = in_app_dir(command, artifact.source)
        procs_files = self._cgroup(spec) if self.cgroups.available else []
        env_fd = _memfd("spaceport-env", _env_script(env))
        try:
            argv = self._argv(spec, idir, command, procs_files, uid, slot)
            self._rotate(idir)
            idir.exit.unlink(missing_ok=True)
            _banner(idir, spec, dropped)
            child, relay = self._launch(spec, idir, argv, env_fd, artifact.source)
        finally:
            os.close(env_fd)
        self._children[spec.name] = child
        self._relays[spec.name] = relay
        record = LocalRecord(
            name=spec.name, space_id=spec.space_id, spec_hash=spec_hash(spec), artifact=artifact_to_dict(artifact),
            labels=instance_labels(spec), host=host, port=port, pid=child.pid,
            pid_start=procs.start_time(child.pid), started_at=time.time(), sandboxed=self.sandboxed,
            uid=uid, slot=slot.index if slot else None,
            extra={"relay_pid": str(relay.pid), "relay_start": str(procs.start_time(relay.pid) or "")},
        )  # fmt: skip
        idir.write(record)
        return Endpoint(host, port)

    def _launch(self, spec: InstanceSpec, idir: InstanceDir, argv: builtins.list[str], env_fd: int, source: Path,
                ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:  # fmt: skip
        """The masking relay, then the supervisor writing into it; both in their own sessions, both with
        the fixed host environment (the app's own environment is the memfd env_fd, given as stdin)."""
        secrets = [spec.env[k] for k in sorted(spec.secret_keys) if k in spec.env]
        secrets_fd = _memfd("spaceport-secrets", logrelay.encode_secrets(secrets))
        read_end, write_end = os.pipe()
        try:
            with idir.log.open("ab") as errors:
                relay = subprocess.Popen(
                    [sys.executable, "-E", "-s", "-m", "controller.runtimes.logrelay", str(idir.log), str(secrets_fd)],
                    stdin=read_end, stdout=subprocess.DEVNULL, stderr=errors, env=hosttools.HOST_ENV,
                    cwd=str(PACKAGE_ROOT), start_new_session=True, close_fds=True, pass_fds=(secrets_fd,),
                )  # fmt: skip
            cwd = "/" if self.sandboxed else str(source)
            child = subprocess.Popen(argv, stdin=env_fd, stdout=write_end, stderr=write_end, env=hosttools.HOST_ENV,
                                     cwd=cwd, start_new_session=True, close_fds=True)  # fmt: skip
        finally:
            for fd in (read_end, write_end, secrets_fd):
                os.close(fd)
        return child, relay

    def _identity(self, spec: InstanceSpec, idir: InstanceDir) -> tuple[int | None, netns.Slot | None]:
        if not self.sandboxed:
            return None, None
        uid = sandbox.space_uid(self.registry, f"{self.state_dir}|{spec.space_id}")
        for path in (idir.home, idir.tmp):
            os.chown(path, uid, uid)
            os.chmod(path, 0o700)
        sandbox.write_identity(idir.etc, uid)
        slot = sandbox.instance_slot(self.registry, f"{self.state_dir}|{spec.name}")
        try:
            if not self._firewall_ready:  # installed or upgraded once per runtime (idempotent)
                netns.ensure_firewall()
                self._firewall_ready = True
            netns.create(slot, self.egress_allow, netns.listener_port(spec.env))  # zero-*, hf_oauth only
        except netns.NetworkSetupError as exc:
            raise RuntimeFailure(f"cannot set up the app's network: {exc}") from exc
        return uid, slot

    def _address(self, artifact: VenvArtifact, slot: netns.Slot | None) -> tuple[str, int, str]:
        """(endpoint host, port, address the app binds)."""
        if slot is not None:
            return slot.app_ip, artifact.port, "0.0.0.0"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((self.bind_host, 0))
            return self.bind_host, int(sock.getsockname()[1]), self.bind_host

    def _env(self, spec: InstanceSpec, artifact: VenvArtifact, port: int, bind: str,
             idir: InstanceDir) -> tuple[dict[str, str], builtins.list[str]]:  # fmt: skip
        """(the app's environment, names dropped): the space's values never replace the platform's."""
        home, tmp = (sandbox.APP_HOME, SANDBOX_TMP) if self.sandboxed else (str(idir.home), str(idir.tmp))
        path = f"{artifact.venv}/bin:/usr/local/bin:/usr/bin:/bin"
        base = {"PATH": path, "VIRTUAL_ENV": str(artifact.venv)}
        ca = "/etc/ssl/certs/ca-certificates.crt"
        defaults = {"SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca} if os.path.exists(ca) else {}
        app_dir = APP_DIR if self.sandboxed else str(artifact.source)
        given, dropped = app_env(spec, port=port, bind=bind, home=home, tmp=tmp, app_dir=app_dir)
        invalid = sorted(k for k in given if not SHELL_NAME.match(k))
        given = {k: v for k, v in given.items() if k not in invalid and "\0" not in v}
        env = {**defaults, **given, **base, **visible_devices_env(spec)}
        return env, [*dropped, *invalid]

    def _cgroup(self, spec: InstanceSpec) -> builtins.list[str]:
        hw = spec.hardware
        limits = Limits(memory_bytes=hw.memory_mb * 1024 * 1024, pids=hw.pids, cpu=hw.cpu)
        try:
            return [str(p) for p in self.cgroups.create(spec.name, limits)]
        except OSError as exc:
            raise RuntimeFailure(f"cannot create cgroups for {spec.name}: {exc}") from exc

    def _argv(self, spec: InstanceSpec, idir: InstanceDir, command: builtins.list[str], procs_files: builtins.list[str],
              uid: int | None, slot: netns.Slot | None) -> builtins.list[str]:  # fmt: skip
        hw = spec.hardware
        limits = [f"--nproc={hw.pids}", f"--nofile={NOFILE}", f"--fsize={hw.disk_mb * 1024 * 1024}", "--core=0"]
        if not self.cgroups.available:
            limits.append(f"--as={hw.memory_mb * 1024 * 1024}")
        if uid is not None and slot is not None:
            shim = ["/bin/sh", "-c", ENV_SHIM, "spaceport-env"]  # the sandbox's own /bin/sh
            inner = netns.enter_argv(slot) + sandbox.bwrap_argv(self._plan(spec, idir, uid), shim + command)
        else:
            inner = [self.tools["sh"], "-c", ENV_SHIM, "spaceport-env", *command]
        head = [self.tools["sh"], "-c", SUPERVISOR, "spaceport-supervisor", str(idir.exit), *procs_files, "--"]
        return [*head, self.tools["prlimit"], *limits, "--", *inner]

    def _plan(self, spec: InstanceSpec, idir: InstanceDir, uid: int) -> sandbox.SandboxPlan:
        artifact = spec.artifact
        assert isinstance(artifact, VenvArtifact)
        venv = artifact.venv.resolve()
        ro = [venv]
        prefix = sandbox.interpreter_prefix(artifact.venv)
        if prefix is not None:
            ro.append(prefix)
        acc = spec.hardware.accelerators
        devices, driver = sandbox.accelerator_devices(acc.type, acc.device_ids) if acc else ((), ())
        return sandbox.SandboxPlan(
            uid=uid, home=idir.home, etc_dir=idir.etc, ro_paths=tuple(dict.fromkeys(ro)), protected=self.protected,
            tmp_size_bytes=spec.hardware.disk_mb * 1024 * 1024, workdir=APP_DIR, devices=devices, extra_ro=driver,
            app_source=artifact.source.resolve(), app_layer=idir.app_layer,
            venv=venv, venv_dirs=idir.venv_dirs, venv_layer=idir.venv_layer, mounts=spec.mounts,
        )  # fmt: skip

    def _prepare_mounts(self, spec: InstanceSpec, idir: InstanceDir, uid: int | None) -> None:
        """Sandboxed: the storage directory (read-write mounts) becomes the space uid's; bwrap binds every mount.
        Unsandboxed there is no mount namespace to bind into, so each mount is a symlink at HOME + its target
        (~/data, ~/models) in the instance's own home; nothing is read-only then (the app runs as the
        controller's user and sees the whole machine: that mode isolates nothing, see README)."""
        for mount in spec.mounts:
            try:
                if uid is not None:
                    if not mount.read_only:
                        sandbox.give_storage(Path(mount.source), uid)
                    continue
                _link_mount(idir.home, mount)
            except (OSError, RuntimeError) as exc:
                raise RuntimeFailure(f"cannot mount {mount.target} for {spec.name}: {exc}") from exc

    def _rotate(self, idir: InstanceDir) -> None:
        with contextlib.suppress(OSError):
            if idir.log.stat().st_size > LOG_ROTATE_BYTES:
                idir.log.replace(idir.log.with_suffix(".log.1"))

    # ---------------------------------------------------------------- state
    def _alive(self, record: LocalRecord) -> bool:
        child = self._children.get(record.name)
        if child is not None and child.pid == record.pid and child.poll() is not None:
            return False
        return procs.is_alive(record.pid, record.pid_start)

    def _relay_alive(self, record: LocalRecord) -> bool:
        relay = self._relays.get(record.name)
        if relay is not None and relay.poll() is not None:  # reaped: not a zombie
            return False
        pid, start = record.extra.get("relay_pid", ""), record.extra.get("relay_start", "")
        return pid.isdigit() and procs.is_alive(int(pid), int(start) if start.isdigit() else None)

    def _drain_relay(self, record: LocalRecord, timeout: float) -> None:
        """Wait (bounded) for the relay of an exited app to write what is left, then make sure it is gone."""
        deadline = time.monotonic() + timeout
        while self._relay_alive(record) and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = record.extra.get("relay_pid", "")
        if self._relay_alive(record) and pid.isdigit():  # a leftover process still holds the pipe
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        relay = self._relays.pop(record.name, None)
        if relay is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                relay.wait(timeout=timeout)

    def _frozen(self, record: LocalRecord) -> bool:
        if self.cgroups.available:
            return self.cgroups.is_frozen(record.name)
        return record.frozen

    def _status(self, name: str) -> InstanceStatus:
        idir = self._dir(name)
        record = idir.read()
        if record is None:
            return InstanceStatus(name, State.MISSING)
        if self._alive(record):
            logrelay.cap_log(idir.log)  # a backstop: the relay caps as it writes
            state = State.FROZEN if self._frozen(record) else State.RUNNING
            return InstanceStatus(name, state, endpoint=Endpoint(record.host, record.port), labels=record.labels)
        self._drain_relay(record, RELAY_DRAIN)  # its last lines (a traceback) belong in the message
        code = idir.exit_code()
        child = self._children.get(name)
        if code is None and child is not None and child.returncode is not None:
            code = 128 - child.returncode if child.returncode < 0 else child.returncode
        what = "stopped" if record.stopped else f"exited with code {code}"
        message = f"{what}\n{idir.log_tail()}".strip()
        return InstanceStatus(name, State.EXITED, exit_code=code, labels=record.labels, message=message)

    def _list(self) -> builtins.list[InstanceStatus]:
        names = sorted(p.name for p in self.instances.iterdir() if (p / "state.json").exists())
        return [self._status(n) for n in names]

    # ---------------------------------------------------------------- lifecycle
    def _set_frozen(self, name: str, frozen: bool) -> None:
        idir = self._dir(name)
        record = idir.read()
        if record is None or not self._alive(record):
            raise RuntimeFailure(f"{name} is not running")
        if self.cgroups.available:
            self.cgroups.set_frozen(name, frozen)
        else:
            procs.signal_tree(record.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        record.frozen = frozen
        idir.write(record)

    def _stop(self, name: str) -> None:
        idir = self._dir(name)
        record = idir.read()
        if record is None:
            return
        if self._alive(record):
            if self._frozen(record):
                self._set_frozen(name, False)
            procs.signal_tree(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while self._alive(record) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._kill_all(record)
        sandbox.discard_app_writes(idir.app_layer)
        sandbox.discard_app_writes(idir.venv_layer)
        record.stopped, record.frozen = True, False
        idir.write(record)

    def _kill_all(self, record: LocalRecord) -> None:
        if self.cgroups.available:
            self.cgroups.kill(record.name)
        if procs.is_alive(record.pid, record.pid_start):
            procs.signal_tree(record.pid, signal.SIGKILL)
        child = self._children.get(record.name)
        if child is not None and child.pid == record.pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=self.stop_timeout)
        self._drain_relay(record, RELAY_DRAIN)

    def _remove(self, name: str) -> None:
        idir = self._dir(name)
        self._stop(name)
        if self.cgroups.available:
            self.cgroups.remove(name)
        record = idir.read()
        if record is not None and record.slot is not None:
            netns.delete(netns.Slot(record.slot))
            sandbox.release_slot(self.registry, f"{self.state_dir}|{name}")
        self._children.pop(name, None)
        shutil.rmtree(idir.path, ignore_errors=True)

    def _disk_usage(self, name: str, stop_after: int | None) -> int | None:
        idir = self._dir(name)
        if idir.read() is None:
            return None
        return disk_usage(idir.writable, stop_after)

    def _discard_writes(self, name: str) -> None:
        idir = self._dir(name)
        record = idir.read()
        if record is None or self._alive(record):
            return
        for path in (idir.home, idir.tmp):
            with contextlib.suppress(OSError):
                for child in builtins.list(path.iterdir()):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)  # fd-based: never follows the app's links
                    else:
                        child.unlink(missing_ok=True)
        sandbox.discard_app_writes(idir.app_layer)
        sandbox.discard_app_writes(idir.venv_layer)

    async def _logs(self, name: str, follow: bool) -> AsyncIterator[str]:
        idir = self._dir(name)
        previous = idir.log.with_suffix(".log.1")
        if not follow and previous.exists():  # output moved aside by a restart or the size cap comes first
            for earlier in (await asyncio.to_thread(_read_from, previous, 0)).decode(errors="replace").splitlines():
                yield earlier
        position, pending = 0, b""
        while True:
            with contextlib.suppress(OSError):
                if idir.log.stat().st_size < position:  # truncated by the size cap: start again at its top
                    position = 0
            chunk = await asyncio.to_thread(_read_from, idir.log, position)
            position += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
            if not follow:
                break
            if not chunk:
                status = await self.status(name)
                if status.state not in (State.RUNNING, State.FROZEN):
                    break
                await asyncio.sleep(0.2)
        if pending:
            yield pending.decode(errors="replace")


def in_app_dir(command: builtins.list[str], source: Path) -> builtins.list[str]:
    """The artifact's command with its source paths (host paths, as the builder wrote them) pointing at
    the app's own writable copy at APP_DIR instead."""
    roots = {str(source), str(source.resolve())}

    def mapped(arg: str) -> str:
        for root in roots:
            if arg == root or arg.startswith(root + "/"):
                return APP_DIR + arg[len(root):]
        return arg

    return [mapped(arg) for arg in command]


def _link_mount(home: Path, mount: Mount) -> None:
    """HOME + target -> the mount's host directory (unsandboxed). Whatever the app left at that path (a file,
    a directory of its own) is moved aside to NAME.replaced-by-mount; an older link is replaced, never followed."""
    link = home / mount.target.lstrip("/")
    for parent in reversed(link.relative_to(home).parents[:-1]):
        where = home / parent
        if where.is_symlink() or (where.exists() and not where.is_dir()):
            where.unlink()
        where.mkdir(exist_ok=True)
    if link.is_symlink():
        if os.readlink(link) == mount.source:
            return
        link.unlink()
    elif link.exists():
        link.rename(link.with_name(link.name + ".replaced-by-mount"))
    link.symlink_to(mount.source, target_is_directory=True)


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding data, positioned at its start, to pass to a child."""
    fd = os.memfd_create(name)  # close-on-exec: only children given it in pass_fds inherit it
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _env_script(env: dict[str, str]) -> bytes:
    """`export NAME='value'` lines for ENV_SHIM (names already checked, values quoted)."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode("utf-8", "surrogateescape")


def _banner(idir: InstanceDir, spec: InstanceSpec, dropped: list[str]) -> None:
    with idir.log.open("ab") as out:
        out.write(f"===== spaceport: starting {spec.name} ({spec.artifact.ref}) =====\n".encode())
        if dropped:
            out.write(f"spaceport: ignored environment names the platform owns: {', '.join(dropped)}\n".encode())


def _read_from(path: Path, position: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(position)
            return handle.read(1 << 20)
    except OSError:
        return b""


def sandbox_mode_status(mode: SandboxMode) -> sandbox.SandboxStatus:
    if mode == "none":
        return sandbox.SandboxStatus(False, "sandbox disabled by configuration (sandbox='none')",
                                     "set the local runtime's sandbox to 'auto' or 'bwrap'")  # fmt: skip
    return sandbox.sandbox_status()

