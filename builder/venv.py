"""Local artifact: a uv-made venv shared by dependency hash, plus the commit's source snapshot.

The environment key hashes (python version, sdk, sdk_version, requirements.txt, pre-requirements.txt
and files they include with -r/-c). A venv is built in a temp dir next to the cache and renamed into
place atomically (uv --relocatable venv), so concurrent builds never see a half-made environment and
a code-only push reuses it ("reusing environment <key>"). uv uses its shared download cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
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
from builder.spaceconfig import DEFAULT_PYTHON, SpaceConfig

ENV_FORMAT = 1  # bump to invalidate every cached environment
MARKER = ".spaceport-env.json"
REQUIREMENT_FILES = ("pre-requirements.txt", "requirements.txt")
_INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)[\s=]+(\S+)", re.MULTILINE)

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
) -> VenvArtifact:
    """Make (or reuse) the space's environment and return how to run it from `source`."""
    if config.sdk == "docker":
        raise BuildFailure(BUILD_ERROR, "Docker spaces need SPACEPORT_RUNTIME=docker (this server runs spaces as local processes)")
    if (source / "packages.txt").is_file():
        log("warning: packages.txt lists apt packages; they are only installed in container builds (SPACEPORT_RUNTIME=docker)")
    venvs = cache_dir / "venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    env = _uv_env(cache_dir, ca_dir)
    config = _with_available_python(config, env, log)
    key = environment_key(source, config)
    final = venvs / key
    if no_cache:
        log("no cache (factory rebuild): building a fresh environment and refreshing downloads")
        final = venvs / f"{key}.{uuid.uuid4().hex[:8]}"
    if (final / MARKER).is_file():
        log(f"reusing environment {key}")
    else:
        log(f"creating environment {key} (python {config.python}, {config.sdk} {config.sdk_version or 'latest'})")
        _create(final, source, config, env, log, time.monotonic() + time_limit, cancel, no_cache)
    return VenvArtifact(
        venv=final, source=source, command=command(final, source, config), port=config.app_port,
        env=environment(config), health_path="/_stcore/health" if config.sdk == "streamlit" else "/",
    )


def environment_key(source: Path, config: SpaceConfig) -> str:
    """Hash of everything that decides the environment's contents."""
    digest = hashlib.sha256()
    header = {"format": ENV_FORMAT, "python": config.python, "sdk": config.sdk, "sdk_version": config.sdk_version}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in _requirement_files(source):
        digest.update(b"\0" + name.encode() + b"\0" + (source / name).read_bytes())
    return digest.hexdigest()[:16]


def _requirement_files(source: Path) -> list[str]:
    found: list[str] = []
    queue = [name for name in REQUIREMENT_FILES if (source / name).is_file()]
    while queue:
        name = queue.pop(0)
        if name in found:
            continue
        found.append(name)
        text = (source / name).read_text(encoding="utf-8", errors="replace")
        for include in _INCLUDE.findall(text):
            rel = os.path.normpath(os.path.join(os.path.dirname(name), include))
            if not rel.startswith("..") and (source / rel).is_file():
                queue.append(rel)
    return found


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


def _create(final: Path, source: Path, config: SpaceConfig, env: dict[str, str], log: Log,
            deadline: float, cancel: threading.Event | None, refresh: bool) -> None:
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        _install(tmp, source, config, env, log, deadline, cancel, refresh)
        (tmp / MARKER).write_text(json.dumps({"python": config.python, "sdk": config.sdk, "sdk_version": config.sdk_version}))
        try:
            tmp.rename(final)
        except OSError:
            if not (final / MARKER).is_file():
                raise
            log(f"environment {final.name} was made concurrently; using it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, source: Path, config: SpaceConfig, env: dict[str, str], log: Log,
             deadline: float, cancel: threading.Event | None, refresh: bool) -> None:
    uv_bin = uv.find_uv_bin()
    python = str(tmp / "bin" / "python")
    # Bytecode is compiled once here: sandboxed apps see their venv read-only and could never cache it,
    # so every start (and every deep wake) would recompile Gradio from source.
    flags = ["--no-config", "--compile-bytecode", *(["--refresh"] if refresh else [])]
    steps: list[tuple[str, list[str]]] = [
        (f"creating a Python {config.python} environment failed",
         [uv_bin, "venv", "--no-config", "--relocatable", "--python", config.python, str(tmp)]),
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
    for failure, argv in steps:
        result = run_streaming(argv, log=log, env=env, deadline=deadline, cancel=cancel, cwd=source)
        if result.returncode != 0:
            raise BuildFailure(BUILD_ERROR, f"{failure}:\n{result.tail_text()}")


def _sdk_packages(config: SpaceConfig) -> list[str]:
    if config.sdk not in ("gradio", "streamlit"):
        return []
    return [f"{config.sdk}=={config.sdk_version}" if config.sdk_version else config.sdk]
