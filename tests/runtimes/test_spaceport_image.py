"""Spaceport's own image (runtime-images/spaceport/Dockerfile, issue 14): built on the test engine from the
bootstrapped bases, `docker run IMAGE serve` serves, and the same image runs `worker` and `beat`.

The image stays on the test engine between runs (layer cache): an unchanged checkout rebuilds nothing,
a code change rebuilds only the project layer (the locked dependencies' layer is reused)."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

from builder.bootstrap import (
    IMAGE_REPOSITORY,
    build_spaceport_image,
    checkout_root,
    project_version,
    spaceport_context,
)
from tests.support.images import ensure_base_images
from tests.support.server import free_port

TAG = f"{IMAGE_REPOSITORY}:test"


def test_context_is_the_package_sources_only_and_deterministic() -> None:
    first, second = spaceport_context(checkout_root()).read(), spaceport_context(checkout_root()).read()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert {"pyproject.toml", "requirements.lock", "README.md", "runtime-images/spaceport/Dockerfile"} <= set(names)
    assert "controller/cli.py" in names and "builder/buildah.py" in names and "web/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith((".venv", "tests/", ".git"))]


def test_not_a_checkout_is_a_clear_error(tmp_path: Path) -> None:
    from builder.errors import BuildFailure

    with pytest.raises(BuildFailure, match="not a Spaceport checkout"):
        build_spaceport_image(None, root=tmp_path, progress=lambda _line: None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def image(docker_host: str) -> Iterator[tuple[docker.DockerClient, str]]:
    ensure_base_images(docker_host)  # one bootstrap at a time across test workers
    client = docker.DockerClient(base_url=docker_host, timeout=900)
    try:
        lines: list[str] = []
        assert build_spaceport_image(client, tag=TAG, progress=lines.append) == TAG, lines[-20:]
        yield client, TAG
    finally:
        client.close()


def _run(client: docker.DockerClient, tag: str, *argv: str) -> str:
    output = client.containers.run(tag, list(argv), remove=True, stdout=True, stderr=True)
    return output.decode() if isinstance(output, bytes) else str(output)


@pytest.mark.docker
def test_image_serves_and_runs_worker_and_beat(image: tuple[docker.DockerClient, str]) -> None:
    client, tag = image
    version = project_version(checkout_root())
    config = client.images.get(tag).attrs["Config"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "/usr/local/bin/spaceport-entrypoint"]
    assert config["User"] == "1000:1000"
    assert config["Labels"]["org.opencontainers.image.version"] == version
    port = free_port()
    container = client.containers.run(tag, ["serve", "--host", "0.0.0.0", "--port", "8000"], detach=True,
                                      ports={"8000/tcp": ("127.0.0.1", port)})
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}", container)
        assert health == {"status": "ok", "role": "leader"}
        api = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10).json()
        assert api["info"]["version"] == version
        code, out = container.exec_run(["python", "-c", "import importlib.metadata as m; print(m.version('spaceport'))"])
        assert (code, out.decode().strip()) == (0, version)
        assert _exec(container, "id -u") == (0, "1000")
        git, buildah = _exec(container, "git --version"), _exec(container, "buildah --version")
        assert git[0] == 0 and git[1].startswith("git version"), git
        assert buildah[0] == 0 and buildah[1].startswith("buildah version"), buildah  # each alone: a run under
        # load once saw `buildah --version` print nothing between the others, and said nothing more
        code, out = _exec(container, "touch /opt/spaceport/x")
        assert code != 0, f"the running user must not be able to change Spaceport's own code: {out}"
        code, out = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/comm"])
        assert "haproxy" in out.decode().split(), "serve runs the HAProxy data plane in front of itself"
        assert "data plane: HAProxy on 0.0.0.0:8000" in container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert "Usage: spaceport worker" in _run(client, tag, "worker", "--help")
    assert "Usage: spaceport beat" in _run(client, tag, "beat", "--help")
    assert "Usage: spaceport worker" in _run(client, tag, "spaceport", "worker", "--help")  # the k8s args form


def _exec(container: docker.models.containers.Container, command: str) -> tuple[int, str]:
    """Run `command` in the container: its exit code and output (stdout and stderr)."""
    code, out = container.exec_run(["sh", "-c", command])
    return int(code), out.decode(errors="replace").strip()


def _wait_healthy(base: str, container: docker.models.containers.Container, attempts: int = 240) -> object:
    for _ in range(attempts):
        try:
            response = httpx.get(f"{base}/healthz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.25)
    pytest.fail(f"serve did not answer /healthz: {container.logs()[-2000:].decode(errors='replace')}")


@pytest.mark.docker
def test_rebuild_reuses_the_locked_dependency_layers(image: tuple[docker.DockerClient, str]) -> None:
    """A rebuild (code changed or not) answers the system packages and the locked dependencies from the cache."""
    client, tag = image
    lines: list[str] = []
    build_spaceport_image(client, tag=tag, progress=lines.append)
    runs = [i for i, line in enumerate(lines) if line.startswith("Step ") and " : RUN " in line]
    deps = [i for i in runs if "-r pyproject.toml -c requirements.lock" in lines[i]]
    assert len(deps) == 1, lines
    assert all(lines[i + 1].strip() == "---> Using cache" for i in runs if i <= deps[0]), lines
