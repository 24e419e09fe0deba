"""Fixtures for the runtime tiers: app sources, a venv, the test image, runtimes to test."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import uv

from builder.buildpacks.base import PythonAppBuildPack, RenderContext, RepoFiles
from builder.spaceconfig import SpaceConfig
from controller.runtimes.sandbox import sandbox_status
from tests.support.tiers import missing

APPS = Path(__file__).resolve().parents[1] / "fixtures" / "apps"
TEST_IMAGE = "spaceport-test/echo:1"


def _need(ok: bool, message: str) -> None:
    if ok:
        return
    missing(message)


def copy_app(app: str, dest: Path) -> Path:
    """A source snapshot like the builder makes: world-readable files, no link back to the repo."""
    shutil.copytree(APPS / app, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for parent in dest.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o755)
    return dest


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    for app in ("echo", "hostile", "envreport"):
        copy_app(app, root / app)
    return root


@pytest.fixture(scope="session")
def system_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A uv venv on the system Python (stdlib apps need nothing installed)."""
    venv = tmp_path_factory.mktemp("venvs") / "stdlib"
    subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", "/usr/bin/python3", str(venv)], check=True)
    venv.parent.chmod(0o755)
    return venv


@pytest.fixture(scope="session")
def sandbox_ok() -> None:
    status = sandbox_status()
    _need(status.available, f"sandbox unavailable: {status.reason} ({status.fix})")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def _build_test_image(docker_host: str) -> None:
    import docker

    try:
        from tests.support.images import ensure_base_images
    except ImportError:  # pragma: no cover - layout without the tests package
        from support.images import ensure_base_images  # type: ignore[no-redef]

    client = docker.DockerClient(base_url=docker_host, timeout=300)
    try:
        client.images.get(TEST_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()
    ensure_base_images(docker_host)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = b"FROM spaceport/base-python:3.11\nCOPY app.py /app/app.py\nWORKDIR /app\nCMD [\"python3\", \"/app/app.py\"]\n"
        for name, data in (("Dockerfile", dockerfile), ("app.py", (APPS / "echo" / "app.py").read_bytes())):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client = docker.DockerClient(base_url=docker_host, timeout=300)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=TEST_IMAGE, rm=True)
    finally:
        client.close()


@pytest.fixture(scope="session")
def test_image(docker_host: str) -> str:
    _build_test_image(docker_host)  # idempotent; the same tag built twice by two workers is harmless
    return TEST_IMAGE


class _EnvReportPack(PythonAppBuildPack):
    """The generated Python image exactly as the gradio/streamlit packs lay it out (base, uid-1000 user,
    HOME, SYSTEM, WORKDIR /home/user/app, COPY --chown), minus the SDK install: the app is stdlib only."""

    sdk = "gradio"

    def detect(self, files: RepoFiles) -> bool:
        return True

    def dependency_layers(self, config: SpaceConfig, files: RepoFiles, release: datetime | None = None) -> list[str]:
        return []

    def command(self, config: SpaceConfig) -> list[str]:
        return ["python", "app.py"]


def _context(source: Path, dockerfile: str) -> io.BytesIO:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
    context.seek(0)
    return context


@pytest.fixture(scope="session")
def envreport_image(docker_host: str) -> str:
    """tests/fixtures/apps/envreport in a generated-pack image (tag = hash of the Dockerfile and files)."""
    import docker

    from tests.support.images import ensure_base_images

    source = APPS / "envreport"
    config = SpaceConfig(sdk="gradio", python_version="3.11")
    dockerfile = _EnvReportPack().render(config, RenderContext(files=RepoFiles.scan(source)))
    digest = hashlib.sha256(dockerfile.encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes())
    tag = f"spaceport-test/envreport:{digest.hexdigest()[:12]}"
    client = docker.DockerClient(base_url=docker_host, timeout=300)
    try:
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        ensure_base_images(docker_host)
        client.images.build(fileobj=_context(source, dockerfile), custom_context=True, tag=tag, rm=True)
        return tag
    finally:
        client.close()
