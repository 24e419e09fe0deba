"""Base images from Debian packages alone, for Docker engines that cannot pull from any registry.

1. `spaceport/base-debian:bookworm`: debootstrap --variant=minbase bookworm, extra CA certificates
   trusted (copied in + update-ca-certificates in a chroot), imported with the docker SDK.
2. `spaceport/base-python:<v>` on top, from runtime-images/cpu/Dockerfile (python3, python3-venv,
   a uid-1000-owned venv first on PATH so `pip install` works, apt-get working).
3. `spaceport/base-sdk:<v>` on that, from runtime-images/sdk/Dockerfile: the system packages of the hosted
   Spaces SDK image (git, git-lfs, ffmpeg, libGL, a compiler, ...) and uv. Generated gradio/streamlit
   builds start FROM it (builder/buildpacks, builder/sdkdeps.py).
4. `spaceport/base-node:<major>` (with `node=True`), from runtime-images/node/Dockerfile: Debian's nodejs
   and npm, the stand-in for node:<major>[-slim|-alpine] (builder/baseimages.py aliases).
5. `spaceport/base-uv:latest` (with `uv_tools=True`), from runtime-images/uv/Dockerfile: /uv and /uvx, copied
   from the uv Spaceport runs; the stand-in for ghcr.io/astral-sh/uv in `COPY --from=ghcr.io/astral-sh/uv:...`.

`build_spaceport_image` makes Spaceport's own image (`spaceport/spaceport:<version>`) from
runtime-images/spaceport/Dockerfile on the Python base, with a context of this checkout's package files.

Debian bookworm packages only Python 3.11. Another version (`python_versions`) is made from an interpreter
installed on the host, found as local builds find theirs (`find_python`: pyenv, SPACEPORT_BUILD_PYTHON_PATH,
uv's managed Pythons; builder/pythons.py): runtime-images/hostpython/Dockerfile copies its installation
(without site-packages and the test suite) onto the 3.11 image of the same kind, which already has every
library CPython links against, and re-makes /opt/venv with it. A version the host does not have either is
skipped with a progress message (an alias or a mirror can provide it instead).
Idempotent: images that exist are skipped.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

import docker
import uv

from builder.baseimages import DEBIAN_BASE, DEBIAN_NODE_MAJOR, UV_BASE, node_base, python_base, sdk_base
from builder.errors import BUILD_ERROR, BuildFailure
from builder.image import FIXED_MTIME, image_available, run_docker_build

DEBIAN_MIRROR = os.environ.get("SPACEPORT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
DEBIAN_PYTHONS = ("3.11",)  # what bookworm's python3 package provides
CA_ENV = {
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
    "CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
}
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], None]
FindPython = Callable[[str], Path | None]  # X.Y -> a host interpreter of that version, or None


def runtime_images_dir() -> Path:
    """runtime-images/ of this checkout (or SPACEPORT_RUNTIME_IMAGES)."""
    configured = os.environ.get("SPACEPORT_RUNTIME_IMAGES")
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "runtime-images"


def bootstrap_images(
    client: docker.DockerClient,
    *,
    python_versions: Sequence[str] = ("3.11",),
    ca_dir: Path | None = HOST_CA_DIR,
    progress: Progress = print,
    sdk: bool = True,
    node: bool = True,
    uv_tools: bool = True,
    find_python: FindPython | None = None,
) -> list[str]:
    """Make sure the base images exist; returns the image names that are available afterwards."""
    ready: list[str] = []
    if image_available(client, DEBIAN_BASE):
        progress(f"{DEBIAN_BASE}: present")
    else:
        build_debian_base(client, ca_dir=ca_dir, progress=progress)
    ready.append(DEBIAN_BASE)
    debian_python = DEBIAN_PYTHONS[0]
    for version in python_versions:
        if version in DEBIAN_PYTHONS:
            name = _ensure(client, python_base(version), "cpu", DEBIAN_BASE, progress)
            ready += [name] + ([_ensure(client, sdk_base(version), "sdk", name, progress)] if sdk else [])
            continue
        interpreter = find_python(version) if find_python is not None else None
        if interpreter is None and not image_available(client, python_base(version)):
            progress(f"{python_base(version)}: skipped (Debian bookworm only packages Python {', '.join(DEBIAN_PYTHONS)} "
                     f"and this host has no Python {version} where uv finds it: install one (pyenv, or a directory "
                     "in SPACEPORT_BUILD_PYTHON_PATH) and bootstrap again)")
            continue
        kinds = [(python_base, _ensure(client, python_base(debian_python), "cpu", DEBIAN_BASE, progress))]
        if sdk:
            kinds.append((sdk_base, _ensure(client, sdk_base(debian_python), "sdk", kinds[0][1], progress)))
        for named, base in kinds:
            ready.append(ensure_host_python(client, named(version), base, version, interpreter, progress))
    if node:
        ready.append(_ensure(client, node_base(DEBIAN_NODE_MAJOR), "node", DEBIAN_BASE, progress))
    if uv_tools:
        ready.append(ensure_uv_base(client, progress=progress))
    return ready


def ensure_uv_base(client: docker.DockerClient, *, progress: Progress = print) -> str:
    """spaceport/base-uv:latest from runtime-images/uv/Dockerfile and this server's uv and uvx binaries."""
    if image_available(client, UV_BASE):
        progress(f"{UV_BASE}: present")
        return UV_BASE
    binary = Path(uv.find_uv_bin()).resolve()
    tools = {"uv": binary, "uvx": binary.with_name("uvx")}
    missing = [str(path) for path in tools.values() if not path.is_file()]
    if missing:
        raise BuildFailure(BUILD_ERROR, f"{UV_BASE}: no uv binary at {', '.join(missing)} (reinstall PyPI uv)")
    progress(f"{UV_BASE}: building from runtime-images/uv/Dockerfile with {binary.parent}/uv and uvx")
    context = _folder_context(runtime_images_dir() / "uv", extra=tools)
    run_docker_build(client, context, tag=UV_BASE, dockerfile="Dockerfile", log=progress)
    progress(f"{UV_BASE}: ready")
    return UV_BASE


def ensure_host_python(client: docker.DockerClient, name: str, base: str, version: str, interpreter: Path | None,
                        progress: Progress) -> str:
    """`name` from runtime-images/hostpython/Dockerfile on `base`, with the host's `interpreter` (version X.Y)."""
    if image_available(client, name):
        progress(f"{name}: present")
        return name
    if interpreter is None:
        raise BuildFailure(BUILD_ERROR, f"{name}: no Python {version} on this host to build it from")
    prefix = host_python_prefix(interpreter, version)
    progress(f"{name}: building from runtime-images/hostpython/Dockerfile on {base} with the host's Python {version} ({prefix})")
    context = host_python_context(prefix, version)
    run_docker_build(client, context, tag=name, dockerfile="Dockerfile", log=progress,
                     build_args={"BASE_IMAGE": base, "PYTHON_VERSION": version})
    progress(f"{name}: ready")
    return name


def host_python_prefix(interpreter: Path, version: str) -> Path:
    """The installation prefix of a host interpreter, checked to be CPython `version` (X.Y)."""
    probe = subprocess.run([str(interpreter), "-c", "import sys, platform; print(sys.base_prefix); "
                            "print('%d.%d' % sys.version_info[:2]); print(platform.python_implementation())"],
                           capture_output=True, text=True, check=False, timeout=60, env={"PATH": _DEFAULT_PATH})
    lines = probe.stdout.split("\n")
    if probe.returncode != 0 or len(lines) < 3 or lines[1:3] != [version, "CPython"]:
        raise BuildFailure(BUILD_ERROR, f"{interpreter} is not CPython {version} "
                                        f"({(probe.stdout + probe.stderr).strip()[-300:]})")
    return Path(lines[0])


def host_python_context(prefix: Path, version: str) -> IO[bytes]:
    """runtime-images/hostpython/ plus python/ = the installation at `prefix`, without what a base does not need
    (site-packages contents: the host's own packages; the test suite; static libraries), deterministic."""
    lib = f"lib/python{version}/"
    emptied = (f"{lib}site-packages/", f"{lib}test/")  # the directories stay, their contents go

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = info.name.removeprefix("python/")
        if rel.startswith(emptied) or (rel.startswith(f"{lib}config-") and rel.endswith(".a")):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = FIXED_MTIME
        return info

    buffer: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 (returned)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(runtime_images_dir() / "hostpython" / "Dockerfile", arcname="Dockerfile", filter=keep)
        tar.add(prefix, arcname="python", filter=keep)
    buffer.seek(0)
    return buffer


def _ensure(client: docker.DockerClient, name: str, flavor: str, base: str, progress: Progress) -> str:
    """Build runtime-images/<flavor>/Dockerfile on `base` as `name` unless the engine has it."""
    if image_available(client, name):
        progress(f"{name}: present")
    else:
        build_from_runtime_images(client, name, flavor, base, progress=progress)
    return name


def build_debian_base(client: docker.DockerClient, *, ca_dir: Path | None, progress: Progress) -> None:
    if shutil.which("debootstrap") is None:
        raise BuildFailure(BUILD_ERROR, "debootstrap is not installed: apt-get install debootstrap (needed to make base images without a registry)")
    with tempfile.TemporaryDirectory(prefix="spaceport-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"{DEBIAN_BASE}: debootstrap bookworm from {DEBIAN_MIRROR}")
        _run(["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", str(rootfs), DEBIAN_MIRROR], progress)
        trusted = trust_certificates(rootfs, ca_dir, progress)
        _slim(rootfs)
        tar_path = Path(tmp) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), f"--mtime=@{FIXED_MTIME}", "--numeric-owner", "-cf", str(tar_path), "."], progress)
        progress(f"{DEBIAN_BASE}: importing ({tar_path.stat().st_size // (1024 * 1024)} MiB)")
        repository, tag = DEBIAN_BASE.split(":")
        client.api.import_image_from_file(str(tar_path), repository=repository, tag=tag, changes=_changes(trusted))
    progress(f"{DEBIAN_BASE}: ready")


def trust_certificates(rootfs: Path, ca_dir: Path | None, progress: Progress) -> bool:
    """Copy *.crt from ca_dir into the rootfs and run update-ca-certificates there; True if any."""
    certs = sorted(ca_dir.glob("*.crt")) if ca_dir is not None and ca_dir.is_dir() else []
    if not certs:
        return False
    target = rootfs / "usr/local/share/ca-certificates/spaceport"
    target.mkdir(parents=True, exist_ok=True)
    for cert in certs:
        shutil.copyfile(cert, target / cert.name)
    _run(["chroot", str(rootfs), "update-ca-certificates"], progress)
    progress(f"trusting {len(certs)} extra CA certificate(s) from {ca_dir}")
    return True


def _slim(rootfs: Path) -> None:
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages", "var/log/*.log"):
        for path in rootfs.glob(pattern):
            path.unlink(missing_ok=True)


def _changes(trusted: bool) -> list[str]:
    env = {"PATH": _DEFAULT_PATH, "LANG": "C.UTF-8", **(CA_ENV if trusted else {})}
    return [f"ENV {key}={value}" for key, value in env.items()] + ['CMD ["/bin/bash"]']


def build_from_runtime_images(client: docker.DockerClient, name: str, flavor: str, base: str, *, progress: Progress) -> None:
    folder = runtime_images_dir() / flavor
    progress(f"{name}: building from runtime-images/{flavor}/Dockerfile on {base}")
    context = _folder_context(folder)
    run_docker_build(client, context, tag=name, dockerfile="Dockerfile", log=progress,
                     build_args={"BASE_IMAGE": base})
    progress(f"{name}: ready")


def _folder_context(folder: Path, extra: dict[str, Path] | None = None) -> io.BytesIO:
    """The files of one runtime-images/<flavor>/ folder (Dockerfile + what it COPYs), plus `extra`
    (name in the context -> file), deterministic."""
    buffer = io.BytesIO()
    files = {p.name: p for p in folder.iterdir() if p.is_file()} | dict(extra or {})
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, path in sorted(files.items()):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


IMAGE_REPOSITORY = "spaceport/spaceport"
# What runtime-images/spaceport/Dockerfile COPYs: the package sources, the lock and the base Dockerfiles.
IMAGE_CONTEXT = ("pyproject.toml", "requirements.lock", "README.md", "controller", "builder", "web", "runtime-images")
_SKIPPED_PARTS = ("__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")


def checkout_root() -> Path:
    """The source checkout this package runs from (pyproject.toml next to builder/)."""
    return Path(__file__).resolve().parent.parent


def project_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def build_spaceport_image(
    client: docker.DockerClient, *, tag: str | None = None, root: Path | None = None,
    ca_dir: Path | None = HOST_CA_DIR, progress: Progress = print, no_cache: bool = False,
) -> str:
    """Build Spaceport's image (default tag spaceport/spaceport:<pyproject version>); returns the tag.

    The Debian and Python bases are bootstrapped first when missing; layers are cached by the engine
    (the context is deterministic, so an unchanged checkout rebuilds nothing)."""
    root = root or checkout_root()
    if not (root / "pyproject.toml").is_file() or not (root / "requirements.lock").is_file():
        raise BuildFailure(BUILD_ERROR, f"{root} is not a Spaceport checkout (no pyproject.toml/requirements.lock): "
                                        "build Spaceport's image from a source checkout")
    version = project_version(root)
    tag = tag or f"{IMAGE_REPOSITORY}:{version}"
    base = python_base("3.11")
    bootstrap_images(client, python_versions=("3.11",), ca_dir=ca_dir, progress=progress, sdk=False, node=False)
    progress(f"{tag}: building from runtime-images/spaceport/Dockerfile on {base}")
    context = spaceport_context(root)
    run_docker_build(client, context, tag=tag, dockerfile="runtime-images/spaceport/Dockerfile", log=progress,
                     build_args={"BASE_IMAGE": base, "VERSION": version}, no_cache=no_cache)
    progress(f"{tag}: ready")
    return tag


def spaceport_context(root: Path) -> IO[bytes]:
    """A deterministic tar of IMAGE_CONTEXT under `root` (no caches, no bytecode, fixed mtimes)."""
    buffer: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 (returned)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for top in IMAGE_CONTEXT:
            path = root / top
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                rel = file.relative_to(root)
                if any(part in _SKIPPED_PARTS or part.endswith(".egg-info") for part in rel.parts) or file.suffix == ".pyc":
                    continue
                data = file.read_bytes()
                info = tarfile.TarInfo(rel.as_posix())
                info.size, info.mtime = len(data), FIXED_MTIME
                info.mode = 0o755 if file.stat().st_mode & 0o111 else 0o644
                tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _run(command: Iterable[str], progress: Progress) -> None:
    argv = list(command)
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise BuildFailure(BUILD_ERROR, f"{argv[0]} failed (exit {result.returncode}):\n{tail}")
    lines = result.stdout.strip().splitlines()
    if lines:
        progress(lines[-1])
