"""Container artifact: a normalised build context + docker SDK build -> ImageArtifact.

The context is a tar made here (sorted entries, fixed mtimes/owners, .dockerignore applied, .git
skipped) so identical dependency files always hit the layer cache. The Dockerfile (rendered by a
buildpack, or the user's own) goes through base image resolution and, when extra CA certificates are
configured, gets them injected right after every external FROM as a COPY of a bundle plus ENV lines
(no RUN, so the user's Dockerfile is not otherwise changed). Both land in `.spaceport/` in the
context; a `COPY . .` in the user's Dockerfile therefore also copies that folder (nothing secret).
The docker SDK drives the classic builder: BuildKit-only syntax (RUN --mount, heredocs) is not
supported. Build args are public variables only; callers must never pass secrets.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.utils.build import exclude_paths

from builder import buildpacks, pythons, sdkdeps
from builder.artifact import ImageArtifact
from builder.baseimages import (
    BOOTSTRAP_COMMAND,
    default_aliases,
    external_from_lines,
    nearest_python,
    resolve_from_lines,
    sdk_base,
    site_pythons,
)
from builder.buildpacks.base import CONTAINER_PORT, RenderContext, RepoFiles
from builder.certs import ca_bundle
from builder.errors import BUILD_ERROR, BuildCancelled, BuildFailure
from builder.requirements import check_requirement_files
from builder.spaceconfig import DEFAULT_PYTHON, SpaceConfig, dockerfile_path

if TYPE_CHECKING:
    from builder.buildah import BuildahEngine

CONTEXT_DIR = ".spaceport"
DOCKERFILE = f"{CONTEXT_DIR}/Dockerfile"
CA_BUNDLE = f"{CONTEXT_DIR}/ca-bundle.crt"
CA_PATH_IN_IMAGE = "/etc/ssl/certs/spaceport-ca-bundle.crt"
FIXED_MTIME = 946684800  # 2000-01-01
TAIL_LINES = 30
SPOOL_BYTES = 64 * 1024 * 1024
TIME_LIMIT_MESSAGE = "the build took longer than the time limit; make the build lighter or ask the admin to raise it"
_ALWAYS_SKIPPED = (".git", CONTEXT_DIR)

Log = Callable[[str], None]


def build_image(
    source: Path,
    config: SpaceConfig,
    *,
    client: docker.DockerClient | None,
    tag: str,
    build_args: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
    mirror: str | None = None,
    ca_dir: Path | None = None,
    log: Log,
    no_cache: bool = False,
    time_limit: float = 1800.0,
    cancel: threading.Event | None = None,
    network: str | None = None,
    container_limits: Mapping[str, int] | None = None,
    engine: BuildahEngine | None = None,
) -> ImageArtifact:
    """Build the space at `source` into image `tag` (spaceport/OWNER-NAME:SHA12, chosen by the caller).

    RUN steps execute owner code: they run with `container_limits` (docker's memory/memswap/cpushares/
    cpusetcpus) on docker network `network` (the caller's build network that cannot reach the host
    nor private ranges), within `time_limit`. With `engine` (builder/buildah.py) the same context is
    built and pushed by buildah instead, contained by the engine (no docker client needed).
    """
    check_requirement_files(source)
    args = dict(build_args or {})
    files = RepoFiles.scan(source)
    dockerfile = prepare_dockerfile(source, config, files, args, aliases, mirror, client, log,
                                    available=engine.available if engine is not None else None)
    bundle = ca_bundle(ca_dir)
    if bundle is not None:
        dockerfile = inject_ca(dockerfile)
    context = make_context(source, dockerfile, bundle, use_dockerignore=config.sdk == "docker")
    size = context.seek(0, io.SEEK_END)
    context.seek(0)
    log(f"building image {tag} ({config.sdk}, context {size // 1024} KiB)")
    labels = {"io.spaceport.sdk": config.sdk} if config.sdk == "docker" else {}  # generated packs LABEL themselves
    deadline = time.monotonic() + time_limit
    if engine is not None:
        engine.build(context, tag=tag, build_args=args, labels=labels, log=log, no_cache=no_cache, deadline=deadline,
                     cancel=cancel)
    elif client is not None:
        run_docker_build(client, context, tag=tag, build_args=args, labels=labels, log=log, no_cache=no_cache,
                         deadline=deadline, cancel=cancel, network=network, container_limits=container_limits)
    else:
        raise ValueError("build_image needs a docker client or a buildah engine")
    port = config.app_port if config.sdk == "docker" else CONTAINER_PORT
    health = "/_stcore/health" if config.sdk == "streamlit" else "/"
    return ImageArtifact(image=tag, port=port, env=tuple(sorted(config.env.items())), health_path=health)


def prepare_dockerfile(
    source: Path,
    config: SpaceConfig,
    files: RepoFiles,
    build_args: Mapping[str, str],
    aliases: Mapping[str, str] | None,
    mirror: str | None,
    client: docker.DockerClient | None,
    log: Log,
    *,
    available: Callable[[str], bool] | None = None,
) -> str:
    """Render (or read) the Dockerfile and resolve its base images (present: `available`, default the engine's)."""
    user_dockerfile = None
    if config.sdk == "docker":
        path = dockerfile_path(source)
        user_dockerfile = path.read_text(encoding="utf-8", errors="replace") if path is not None else None
    ctx = RenderContext(files=files, build_arg_names=tuple(sorted(build_args)), dockerfile=user_dockerfile,
                        sdk_release=sdkdeps.release_for(config))
    exists = available or (lambda ref: client is not None and image_available(client, ref))
    effective = {**default_aliases(site_pythons(exists)), **(aliases or {})}

    if config.sdk != "docker":
        version, _why = pythons.requested(config.python_version, source, DEFAULT_PYTHON, log)
        config = dataclasses.replace(config, python_version=version)

    def resolve(space: SpaceConfig) -> tuple[str, list[str]]:
        text = buildpacks.for_config(space).render(space, ctx)
        return resolve_from_lines(text, effective, mirror, exists, build_args)

    try:
        resolved, messages = resolve(config)
    except BuildFailure:
        have = site_pythons(exists, sdk_base)
        nearest = nearest_python(config.python, have) or DEFAULT_PYTHON
        if config.sdk == "docker" or config.python == nearest:
            raise
        log(f"warning: no base image for Python {config.python} (python_version in README.md, else the site default) "
            f"on this server (it has Python {', '.join(have)}; `{BOOTSTRAP_COMMAND} --python {config.python}` makes one "
            f"from a host interpreter); building with the nearest, Python {nearest}")
        resolved, messages = resolve(dataclasses.replace(config, python_version=nearest))
    for message in messages:
        log(message)
    return resolved


def image_available(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError:
        return False
    return True


def inject_ca(dockerfile: str) -> str:
    """After each external FROM: COPY the CA bundle in and point SSL/pip/requests/curl/node at it."""
    lines = dockerfile.split("\n")
    env = " ".join(
        f"{name}={CA_PATH_IN_IMAGE}"
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
    )
    for index in reversed(external_from_lines(dockerfile)):
        lines[index + 1:index + 1] = [f"COPY {CA_BUNDLE} {CA_PATH_IN_IMAGE}", f"ENV {env}"]
    return "\n".join(lines)


def make_context(source: Path, dockerfile: str, bundle: bytes | None, *, use_dockerignore: bool) -> IO[bytes]:
    """A deterministic tar of the source plus .spaceport/Dockerfile (and the CA bundle); spills to disk."""
    buffer: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in context_paths(source, use_dockerignore):
            _add_path(tar, source, rel)
        _add_bytes(tar, DOCKERFILE, dockerfile.encode())
        if bundle is not None:
            _add_bytes(tar, CA_BUNDLE, bundle)
    buffer.seek(0)
    return buffer


def context_paths(source: Path, use_dockerignore: bool) -> list[str]:
    """Sorted relative paths to send (files, symlinks, empty dirs), honouring .dockerignore."""
    patterns: list[str] = []
    ignore = source / ".dockerignore"
    if use_dockerignore and ignore.is_file():
        patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    included = exclude_paths(str(source), patterns) if patterns else _all_paths(source)
    return sorted(p for p in included if p.split("/", 1)[0] not in _ALWAYS_SKIPPED)


def _all_paths(source: Path) -> set[str]:
    return {p.relative_to(source).as_posix() for p in source.rglob("*")}


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isdir() or info.mode & 0o111:
        info.mode = 0o755
    elif not info.issym():
        info.mode = 0o644
    return info


def _add_path(tar: tarfile.TarFile, source: Path, rel: str) -> None:
    path = source / rel
    if path.is_dir() and not path.is_symlink():
        return  # parent directories are implied by their files; empty ones are not needed
    info = _normalise(tar.gettarinfo(str(path), arcname=rel))
    if info.isreg():
        with path.open("rb") as handle:
            tar.addfile(info, handle)
    else:
        tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _normalise(tarfile.TarInfo(name))
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def run_docker_build(
    client: docker.DockerClient,
    context: IO[bytes],
    *,
    tag: str,
    log: Log,
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    dockerfile: str = DOCKERFILE,
    no_cache: bool = False,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
    network: str | None = None,
    container_limits: Mapping[str, int] | None = None,
) -> str:
    """Run a classic-builder build from a tar context, streaming its lines to `log`; returns the image id.

    The deadline is checked between output lines and bounds each silent read (HTTP read timeout).
    """
    read_timeout = None if deadline is None else max(1.0, deadline - time.monotonic())
    tail: list[str] = []
    steps: list[str] = []
    image_id = ""
    try:
        stream = client.api.build(
            fileobj=context, custom_context=True, tag=tag, buildargs=dict(build_args or {}),
            labels=dict(labels or {}), dockerfile=dockerfile, nocache=no_cache, rm=True, forcerm=True,
            pull=False, decode=True, timeout=read_timeout, network_mode=network,
            container_limits=dict(container_limits) if container_limits else None,
        )
        for chunk in _guarded(stream, deadline, cancel):
            image_id = _handle_chunk(chunk, tail, log, steps) or image_id
    except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        raise BuildFailure(BUILD_ERROR, TIME_LIMIT_MESSAGE) from None
    except (docker.errors.APIError, requests.exceptions.ConnectionError) as exc:
        raise BuildFailure(BUILD_ERROR, f"the Docker engine failed the build: {exc}") from None
    if not image_id:
        image_id = client.images.get(tag).id or ""
    return image_id


_STEP = re.compile(r"^Step \d+/\d+ : ")
_NOISE = re.compile(r"^(?: ---> |Removing intermediate container |Step \d+/\d+ : |\s*$)")
_EXIT = re.compile(r"returned a non-zero code: (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def failure_summary(step: str, tail: list[str], error: str) -> str:
    """'Dockerfile step 5/9 `RUN ...` failed (exit code 1): <its last error line>' for the stage message."""
    instruction = step.split(" : ", 1)[1].strip() if " : " in step else ""
    if len(instruction) > 160:
        instruction = instruction[:157] + "..."
    lines = [clean for clean in (_ANSI.sub("", line).strip() for line in tail) if not _NOISE.match(clean)]
    errors = [line for line in lines if re.search(r"error|exception|not found|no such|failed|cannot|unable", line, re.IGNORECASE)]
    cause = (errors or lines or [error])[-1]
    code = _EXIT.search(error)
    where = f"Dockerfile step {step.split(' : ', 1)[0].removeprefix('Step ')} `{instruction}`" if instruction else "docker build"
    return f"{where} failed{f' (exit code {code.group(1)})' if code else ''}: {cause}"


def _guarded(stream: Iterator[dict[str, Any]], deadline: float | None, cancel: threading.Event | None) -> Iterator[dict[str, Any]]:
    for chunk in stream:
        if cancel is not None and cancel.is_set():
            _close(stream)
            raise BuildCancelled()
        if deadline is not None and time.monotonic() > deadline:
            _close(stream)
            raise BuildFailure(BUILD_ERROR, TIME_LIMIT_MESSAGE)
        yield chunk


def _close(stream: Iterator[dict[str, Any]]) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        close()


def _handle_chunk(chunk: dict[str, Any], tail: list[str], log: Log, steps: list[str] | None = None) -> str | None:
    if "error" in chunk:
        error = str(chunk.get("error", "")).strip()
        recent = "\n".join(tail[-TAIL_LINES:])
        summary = failure_summary((steps or [""])[-1], tail, error)
        raise BuildFailure(BUILD_ERROR, f"{summary}\n--- last build output ---\n{recent}\n--- docker: {error}")
    aux = chunk.get("aux")
    if isinstance(aux, dict) and aux.get("ID"):
        return str(aux["ID"])
    text = chunk.get("stream") or chunk.get("status") or ""
    for line in str(text).splitlines():
        if line.strip():
            if steps is not None and _STEP.match(line):
                steps[:] = [line]
                tail.clear()  # the tail is the current step's output
            tail.append(line)
            del tail[:-TAIL_LINES]
            log(line)
    return None
