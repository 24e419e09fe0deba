"""Local artifact: a uv-made venv shared by dependency hash, plus the commit's source snapshot.

The environment key hashes (owner, python version, sdk, sdk_version, requirements.txt,
pre-requirements.txt and files they include with -r/-c). A venv is built in a temp dir next to the cache
and renamed into place atomically (uv --relocatable venv), so concurrent builds never see a half-made
environment and a code-only push reuses it ("reusing environment <key>").

Owner code runs here (local packages' build backends, sdists from an index, .pth files), so nothing an
owner's build writes is ever read by another owner's build: the key includes the owner, each owner has
its own uv cache (`uv-cache/<owner digest>`), and with a `BuildSandbox` (builder/sandbox.py) every uv step
runs inside it as the owner's build identity and the finished venv is sealed (root-owned, read-only to
builds). Requirement lines pointing outside the repo are refused first (builder/requirements.py).
Without an owner (direct builder use, tests) uv's default cache is used, as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import uv

from builder.artifact import VenvArtifact
from builder.buildpacks.streamlit import STREAMLIT_FLAGS
from builder.certs import ca_bundle
from builder.errors import BUILD_ERROR, BuildFailure
from builder.proc import run_streaming
from builder.requirements import check_requirement_files, has_local_paths
from builder.sandbox import BuildSandbox
from builder.spaceconfig import DEFAULT_PYTHON, SpaceConfig

ENV_FORMAT = 1  # bump to invalidate every cached environment
MARKER = ".spaceport-env.json"
SANDBOX_PATH = "/usr/bin:/bin"

Log = Callable[[str], None]


def build_venv(
    source: Path,
    config: SpaceConfig,
    *,
    cache_dir: Path,
    log: Log,
    no_cache: bool = False,
    time_limit: float = 1800.0,
    cancel: threading.Event | None = None,
    ca_dir: Path | None = None,
    owner: str = "",
    sandbox: BuildSandbox | None = None,
    uv_seed: Path | None = None,
) -> VenvArtifact:
    """Make (or reuse) `owner`'s environment for the space and return how to run it from `source`."""
    if config.sdk == "docker":
        raise BuildFailure(BUILD_ERROR, "Docker spaces need SPACEPORT_RUNTIME=docker (this server runs spaces as local processes)")
    if (source / "packages.txt").is_file():
        log("warning: packages.txt lists apt packages; they are only installed in container builds (SPACEPORT_RUNTIME=docker)")
    check_requirement_files(source)
    venvs = cache_dir / "venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    env = _uv_env(cache_dir, ca_dir)
    config = _with_available_python(config, env, log)
    key = environment_key(source, config, owner, sandboxed=sandbox is not None)
    final = venvs / key
    if no_cache:
        log("no cache (factory rebuild): building a fresh environment and refreshing downloads")
        final = venvs / f"{key}.{uuid.uuid4().hex[:8]}"
    if (final / MARKER).is_file():
        log(f"reusing environment {key}")
    else:
        log(f"creating environment {key} (python {config.python}, {config.sdk} {config.sdk_version or 'latest'})")
        job = _Job(source, config, env, log, time.monotonic() + time_limit, cancel, no_cache, owner, cache_dir,
                   sandbox, uv_seed)
        _create(final, job)
    return VenvArtifact(
        venv=final, source=source, command=command(final, source, config), port=config.app_port,
        env=environment(config), health_path="/_stcore/health" if config.sdk == "streamlit" else "/",
    )


def environment_key(source: Path, config: SpaceConfig, owner: str = "", *, sandboxed: bool = False) -> str:
    """Hash of everything that decides the environment's contents, and whose it is.

    Local packages, URLs and sdists make the contents depend on more than the requirements text (and
    their code ran as the owner's build identity), so an environment is never shared across owners;
    nor is one built (and sealed) in the sandbox ever confused with one built without it.
    """
    digest = hashlib.sha256()
    header = {"format": ENV_FORMAT, "python": config.python, "sdk": config.sdk, "sdk_version": config.sdk_version}
    if owner:
        header["owner"] = owner
    if sandboxed:
        header["sandboxed"] = True
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in check_requirement_files(source):
        digest.update(b"\0" + name.encode() + b"\0" + (source / name).read_bytes())
    return digest.hexdigest()[:16]


def owner_cache(cache_dir: Path, owner: str) -> Path:
    """The owner's own uv cache (written only by that owner's builds)."""
    return cache_dir / "uv-cache" / hashlib.sha256(owner.encode()).hexdigest()[:16]


def command(venv: Path, source: Path, config: SpaceConfig) -> tuple[str, ...]:
    python = str(venv / "bin" / "python")
    app = str(source / config.app_file)
    if config.sdk == "streamlit":
        return (python, "-m", "streamlit", "run", app, *STREAMLIT_FLAGS)
    if config.sdk == "static":
        return (python, "-m", "http.server", "{port}", "--bind", "{host}", "--directory", str(source))
    return (python, app)


def environment(config: SpaceConfig) -> tuple[tuple[str, str], ...]:
    env = {"PYTHONUNBUFFERED": "1", **config.env}
    if config.sdk == "gradio":
        env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if config.sdk == "streamlit":
        env.setdefault("STREAMLIT_SERVER_HEADLESS", "true")
        env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return tuple(sorted(env.items()))


def _with_available_python(config: SpaceConfig, env: dict[str, str], log: Log) -> SpaceConfig:
    """Fall back to the default Python (with a warning) when python_version is not installed here."""
    if config.python == DEFAULT_PYTHON:
        return config
    found = subprocess.run([uv.find_uv_bin(), "python", "find", "--no-config", config.python],
                           env=env, capture_output=True, text=True, check=False)
    if found.returncode == 0:
        return config
    log(f"warning: Python {config.python} (python_version in README.md) is not installed on this server; "
        f"building with Python {DEFAULT_PYTHON} instead")
    return dataclasses.replace(config, python_version=DEFAULT_PYTHON)


def _uv_env(cache_dir: Path, ca_dir: Path | None) -> dict[str, str]:
    """uv's environment: no Python downloads, and TLS that trusts the host's (and extra) CAs."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["NO_COLOR"] = "1"
    bundle = ca_bundle(ca_dir)
    if bundle is not None:
        path = cache_dir / "ca-bundle.crt"
        path.write_bytes(bundle)
        env["SSL_CERT_FILE"] = str(path)
    elif not env.get("SSL_CERT_FILE"):
        env["UV_NATIVE_TLS"] = "1"  # the system store holds any egress proxy CA
    return env


@dataclasses.dataclass(frozen=True)
class _Job:
    source: Path
    config: SpaceConfig
    env: dict[str, str]  # uv's host environment (unsandboxed) / the source of the few values passed inside
    log: Log
    deadline: float
    cancel: threading.Event | None
    refresh: bool
    owner: str
    cache_dir: Path
    sandbox: BuildSandbox | None
    uv_seed: Path | None = None


def _create(final: Path, job: _Job) -> None:
    tag = uuid.uuid4().hex[:8]
    tmp = final.parent / f".tmp-{final.name}-{tag}"
    work = job.cache_dir / "build-work" / f"{final.name}-{tag}"
    try:
        _install(tmp, work, job)
        marker = tmp / MARKER
        marker.unlink(missing_ok=True)  # never follow a link the build may have planted
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"python": job.config.python, "sdk": job.config.sdk,
                                  "sdk_version": job.config.sdk_version, "owner": job.owner}))
        if job.sandbox is not None:
            job.sandbox.seal(tmp)  # before it becomes visible: no build identity can change it afterwards
        try:
            tmp.rename(final)
        except OSError:
            if not (final / MARKER).is_file():
                raise
            job.log(f"environment {final.name} was made concurrently; using it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _steps(tmp: Path, job: _Job, python_spec: str) -> list[tuple[str, list[str]]]:
    uv_bin = uv.find_uv_bin()
    python = str(tmp / "bin" / "python")
    config, source = job.config, job.source
    # Bytecode is compiled once here: sandboxed apps see their venv read-only and could never cache it,
    # so every start (and every deep wake) would recompile Gradio from source.
    flags = ["--no-config", "--compile-bytecode", *(["--refresh"] if job.refresh else [])]
    steps: list[tuple[str, list[str]]] = [
        (f"creating a Python {config.python} environment failed",
         [uv_bin, "venv", "--no-config", "--relocatable", "--python", python_spec, str(tmp)]),
    ]
    if (source / "pre-requirements.txt").is_file():
        steps.append(("installing pre-requirements.txt failed; fix pre-requirements.txt",
                      [uv_bin, "pip", "install", *flags, "--python", python, "-r", "pre-requirements.txt"]))
    packages = _sdk_packages(config)
    reqs = ["-r", "requirements.txt"] if (source / "requirements.txt").is_file() else []
    if reqs or packages:
        what = "requirements.txt" if reqs else f"the {config.sdk} package"
        steps.append((f"installing {what} failed; fix requirements.txt or sdk_version in README.md",
                      [uv_bin, "pip", "install", *flags, "--python", python, *reqs, *packages]))
    return steps


def _install(tmp: Path, work: Path, job: _Job) -> None:
    if job.sandbox is None:
        env = dict(job.env)
        if job.owner:
            env["UV_CACHE_DIR"] = str(owner_cache(job.cache_dir, job.owner))
        for failure, argv in _steps(tmp, job, job.config.python):
            _run(argv, failure, env, job.source, job)
        return
    _install_sandboxed(tmp, work, job, job.sandbox)


def _install_sandboxed(tmp: Path, work: Path, job: _Job, box: BuildSandbox) -> None:
    """Every uv step inside the sandbox: only the new venv, the owner's uv cache and a scratch dir are
    writable; the source (or, for local packages, a throwaway writable copy at the same path), uv and the
    interpreter are read-only; nothing else of the host is visible."""
    interpreter = _host_interpreter(job)
    cache = owner_cache(job.cache_dir, job.owner or "-")
    writable = {tmp: tmp, cache: cache, work / "home": work / "home", work / "tmp": work / "tmp"}
    if has_local_paths(job.source):
        shutil.copytree(job.source, work / "src", symlinks=True)
        writable[work / "src"] = job.source
        job.log("local packages in the requirements: building them in a throwaway writable copy of the source")
    for host in writable:
        host.mkdir(parents=True, exist_ok=True)
        box.prepare(host, seed=job.uv_seed if host == cache else None)
    uv_bin = Path(uv.find_uv_bin()).resolve()
    readonly = [uv_bin, *([_prefix(interpreter)] if not interpreter.is_relative_to("/usr") else [])]
    inside = {"PATH": SANDBOX_PATH, "HOME": str(work / "home"), "TMPDIR": str(work / "tmp"),
              "UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    for name in ("SSL_CERT_FILE", "UV_NATIVE_TLS"):
        if name in job.env:
            inside[name] = job.env[name]
    if "SSL_CERT_FILE" in inside and not inside["SSL_CERT_FILE"].startswith("/etc/"):
        readonly.append(Path(inside["SSL_CERT_FILE"]))
    job.log(f"build sandbox: {box.describe()}")
    for failure, argv in _steps(tmp, job, str(interpreter)):
        argv = [str(uv_bin), *argv[1:]]
        wrapped, env = box.wrap(argv, writable=writable, readonly=readonly, env=inside, cwd=job.source)
        _run(wrapped, failure, env, None, job)


def _run(argv: list[str], failure: str, env: dict[str, str], cwd: Path | None, job: _Job) -> None:
    result = run_streaming(argv, log=job.log, env=env, deadline=job.deadline, cancel=job.cancel, cwd=cwd)
    if result.returncode != 0:
        raise BuildFailure(BUILD_ERROR, f"{failure}:\n{result.tail_text()}")


def _host_interpreter(job: _Job) -> Path:
    """The base interpreter, found on the host (no owner code runs): the sandbox sees only it."""
    found = subprocess.run([uv.find_uv_bin(), "python", "find", "--system", "--no-config", job.config.python],
                           env=job.env, capture_output=True, text=True, check=False, cwd="/")
    if found.returncode != 0 or not found.stdout.strip():
        raise BuildFailure(BUILD_ERROR, f"no Python {job.config.python} on this server; set python_version in README.md "
                                        f"to an installed version or ask the admin to install it")
    return Path(found.stdout.strip()).resolve()


def _prefix(interpreter: Path) -> Path:
    """The installation prefix holding bin/pythonX and lib/pythonX (bound read-only)."""
    return interpreter.parent.parent


def _sdk_packages(config: SpaceConfig) -> list[str]:
    if config.sdk not in ("gradio", "streamlit"):
        return []
    return [f"{config.sdk}=={config.sdk_version}" if config.sdk_version else config.sdk]
