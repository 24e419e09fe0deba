"""Daemonless container builds: buildah (Debian's package) instead of a Docker engine, then a push.

`BuildahEngine` is what builder/image.build_image uses instead of the docker SDK when a worker has no
Docker engine (SPACEPORT_IMAGE_BUILDER=buildah): the SAME normalised context and Dockerfile (make_context,
prepare_dockerfile, inject_ca), built with `buildah bud --isolation chroot --layers --format docker`
(the classic builder's layer order and cache keys, docker-format config), then `buildah push` to the
reference the caller chose (REGISTRY/SLUG:SHA12). Nodes pull from the registry, so the push is part of
the build: an image that is not in the registry is of no use to any runtime.

Containment of owner RUN steps (the trust boundary). Chroot isolation creates only mount and UTS
namespaces: RUN steps share buildah's network, PID and IPC namespaces and its cgroup, and buildah
refuses `--network` with it (buildah PR #4257). So the containment is built around the buildah process:
* network: `wrap` (from the caller) puts buildah in a network namespace whose only way out is the build
  egress proxy (package indexes only); the proxy variables in `env` reach RUN steps through buildah's
  `--http-proxy` (default on), never the image config. No route to the host or private ranges;
* processes: as root, buildah runs under `unshare --pid --fork --mount-proc`, so a RUN step sees only
  buildah's own processes, and with its reduced capabilities (no CAP_SYS_PTRACE) cannot read their
  environment; buildah's environment is `env` plus a fixed PATH/HOME, never the worker's;
* filesystem: a RUN step sees the image's root filesystem and the build context only;
* limits: `wrap` may join a cgroup (memory, pids, cpu); buildah's own --memory/--cpu-shares need a
  cgroup-creating isolation and do nothing under chroot, so they are not passed.
The push runs outside `wrap` (it needs the registry, RUN steps do not).

Base images come from buildah's own storage; a missing one is pulled from the registry under the same
name (REGISTRY/spaceport/base-sdk:3.11 for spaceport/base-sdk:3.11: push the bootstrapped bases there).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.contexttar import extract_context
from builder.errors import BUILD_ERROR, BuildCancelled, BuildFailure
from builder.image import DOCKERFILE, TAIL_LINES, TIME_LIMIT_MESSAGE, failure_summary

BUILDAH = "/usr/bin/buildah"
UNSHARE = "/usr/bin/unshare"
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
BUILD_ERROR_HINT = "ask the admin to check the worker's buildah (storage, user namespaces)"
Log = Callable[[str], None]


def missing_registry_message() -> str:
    return ("SPACEPORT_IMAGE_BUILDER=buildah pushes every build to a registry the nodes pull from, and "
            "SPACEPORT_REGISTRY is not set: set it (e.g. registry.local:5000/spaces) or use IMAGE_BUILDER=docker")


def is_loopback_registry(ref: str) -> bool:
    """Only a registry on this machine (127.0.0.0/8, ::1, localhost) may be plain HTTP / unverified."""
    host = ref.split("/", 1)[0]
    name = host[1:host.find("]")] if host.startswith("[") else host.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BuildahEngine:
    """One worker's buildah: its storage, the registry, and the containment prefix for builds."""

    registry: str
    root: Path | None = None
    runroot: Path | None = None
    storage_driver: str = ""
    wrap: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    buildah: str = BUILDAH
    pid_namespace: bool = os.geteuid() == 0

    def __post_init__(self) -> None:
        if not self.registry:
            raise BuildFailure(BUILD_ERROR, missing_registry_message())

    # ------------------------------------------------------------------ argv
    def base_argv(self) -> list[str]:
        argv = [self.buildah]
        if self.root is not None:
            argv += ["--root", str(self.root)]
        if self.runroot is not None:
            argv += ["--runroot", str(self.runroot)]
        if self.storage_driver:
            argv += ["--storage-driver", self.storage_driver]
        return argv

    def bud_argv(self, context_dir: Path, *, tag: str, build_args: Mapping[str, str], labels: Mapping[str, str],
                 no_cache: bool) -> list[str]:
        """The contained `buildah bud` command line (pure)."""
        head = [*self.wrap, *([UNSHARE, "--pid", "--fork", "--kill-child", "--mount-proc"] if self.pid_namespace else [])]
        argv = [*head, *self.base_argv(), "bud", "--isolation", "chroot", "--layers", "--pull=never",
                "--format", "docker", "--identity-label=false", "--file", str(context_dir / DOCKERFILE), "--tag", tag]
        argv += [a for key, value in sorted(build_args.items()) for a in ("--build-arg", f"{key}={value}")]
        argv += [a for key, value in sorted(labels.items()) for a in ("--label", f"{key}={value}")]
        if no_cache:
            argv.append("--no-cache")
        return [*argv, str(context_dir)]

    def push_argv(self, tag: str) -> list[str]:
        tls = ["--tls-verify=false"] if is_loopback_registry(tag) else []
        return [*self.base_argv(), "push", *tls, "--format", "v2s2", tag, f"docker://{tag}"]

    def process_env(self) -> dict[str, str]:
        env = {**BASE_ENV, "HOME": str(Path(tempfile.gettempdir())), **dict(self.env)}
        if "HOME" in os.environ and os.geteuid() != 0:  # rootless buildah keeps its config under HOME
            env["HOME"] = os.environ["HOME"]
        if "XDG_RUNTIME_DIR" in os.environ:
            env["XDG_RUNTIME_DIR"] = os.environ["XDG_RUNTIME_DIR"]
        return env

    # ------------------------------------------------------------------ base images
    def available(self, ref: str) -> bool:
        """Is `ref` in buildah's storage? Otherwise pull REGISTRY-HOST/.../ref's name from the registry."""
        if self._run([*self.base_argv(), "inspect", "--type", "image", ref]).returncode == 0:
            return True
        if ref.startswith(self.registry.split("/", 1)[0] + "/"):
            return False
        source = f"{self.registry.rstrip('/')}/{ref}"
        tls = ["--tls-verify=false"] if is_loopback_registry(source) else []
        if self._run([*self.base_argv(), "pull", "--quiet", *tls, f"docker://{source}"]).returncode != 0:
            return False
        return self._run([*self.base_argv(), "tag", source, ref]).returncode == 0

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.process_env(), check=False, timeout=600)

    # ------------------------------------------------------------------ build + push
    def build(self, context: IO[bytes], *, tag: str, log: Log, build_args: Mapping[str, str] | None = None,
              labels: Mapping[str, str] | None = None, no_cache: bool = False, deadline: float | None = None,
              cancel: threading.Event | None = None) -> None:
        """Build the context tar into `tag` in buildah's storage, then push it to the registry."""
        with tempfile.TemporaryDirectory(prefix="spaceport-buildah-") as tmp:
            context_dir = Path(tmp) / "context"
            context_dir.mkdir()
            with tarfile.open(fileobj=context, mode="r:*") as tar:
                extract_context(tar, context_dir)
            argv = self.bud_argv(context_dir, tag=tag, build_args=dict(build_args or {}), labels=dict(labels or {}),
                                 no_cache=no_cache)
            tail, steps = stream_process(argv, self.process_env(), log, deadline, cancel, track_steps=True)
            if tail is not None:
                raise BuildFailure(BUILD_ERROR, _summary(steps, tail))
        log(f"pushing image {tag}")
        tail, _ = stream_process(self.push_argv(tag), self.process_env(), log, deadline, cancel)
        if tail is not None:
            error = tail[-1] if tail else "no output"
            raise BuildFailure(BUILD_ERROR, f"the image was built but pushing {tag} failed: {error}. Check "
                                            "SPACEPORT_REGISTRY and that the registry is reachable from the worker.")
        log(f"pushed {tag}")


def _summary(steps: list[str], tail: list[str]) -> str:
    errors = [line for line in tail if line.startswith(("error building at STEP", "Error:"))]
    error = errors[-1] if errors else (tail[-1] if tail else "buildah failed")
    body = [line for line in tail if line not in errors]
    summary = failure_summary((steps or [""])[-1], body or tail, error)
    recent = "\n".join(tail[-TAIL_LINES:])
    return f"{summary}\n--- last build output ---\n{recent}\n--- buildah: {error}"


def stream_process(argv: Sequence[str], env: Mapping[str, str], log: Log, deadline: float | None,
                   cancel: threading.Event | None, *, track_steps: bool = False) -> tuple[list[str] | None, list[str]]:
    """Run argv, streaming its lines to `log`; (None, steps) on success, (tail, steps) on a non-zero exit.

    Cancel and the deadline are checked at least every 0.5 s, also while the process is silent; either
    kills the whole process group."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict(env), start_new_session=True)
    assert proc.stdout is not None
    tail: list[str] = []
    steps: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        buffer = b""
        while True:
            _check(proc, deadline, cancel)
            if not selector.select(timeout=0.5):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                _line(raw.decode(errors="replace").rstrip("\r"), tail, steps if track_steps else None, log)
        if buffer:
            _line(buffer.decode(errors="replace"), tail, steps if track_steps else None, log)
    code = proc.wait()
    return (tail if code != 0 else None), steps


def _line(line: str, tail: list[str], steps: list[str] | None, log: Log) -> None:
    if not line.strip():
        return
    if steps is not None and line.startswith("STEP "):
        number, _, instruction = line.removeprefix("STEP ").partition(": ")
        steps[:] = [f"Step {number} : {instruction}"]  # the docker builder's form, for failure_summary
        tail.clear()
    tail.append(line)
    del tail[:-TAIL_LINES]
    log(line)


def _check(proc: subprocess.Popen[bytes], deadline: float | None, cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        _kill(proc)
        raise BuildCancelled()
    if deadline is not None and time.monotonic() > deadline:
        _kill(proc)
        raise BuildFailure(BUILD_ERROR, TIME_LIMIT_MESSAGE)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
