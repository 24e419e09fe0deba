"""Spaceport's own image (runtime-images/spaceport/Dockerfile, issue 14): built on the test engine from the
bootstrapped bases, `docker run IMAGE serve` serves, and the same image runs `worker` and `beat`.

The image stays on the test engine between runs (layer cache): an unchanged checkout rebuilds nothing,
a code change rebuilds only the project layer (the locked dependencies' layer is reused)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

from builder.baseimages import DEBIAN_BASE
from builder.bootstrap import (
    IMAGE_REPOSITORY,
    build_spaceport_image,
    checkout_root,
    project_version,
    spaceport_context,
)
from tests.support.images import ensure_base_images
from tests.support.registry import local_registry, registry_available
from tests.support.server import free_port
from tests.support.tiers import missing

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
        # Each command alone, its exit code in the message: a run under load once saw `buildah --version` print
        # nothing between the others, and said nothing more.
        git, buildah = _exec(container, "git --version"), _exec(container, "buildah --version")
        assert git[0] == 0 and git[1].startswith("git version"), git
        assert buildah[0] == 0 and buildah[1].startswith("buildah version"), buildah
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


# ----------------------------------------------------------------------------- the worker pod's daemonless build

SECCOMP = Path("/usr/share/containers/seccomp.json")  # containers-common's: the profile k8s/README installs on nodes
CANARY = "spaceport-worker-canary-41c7"
# What the worker does for a docker space (controller/tasks.py -> builder.build with open_buildah), run in the
# container by the image's own Python: the space's files come as JSON (the container's uid 1000 cannot read
# the test's temporary directory).
WORKER_BUILD = """
import json, os, sys
from pathlib import Path
from builder.build import build
from controller.config import Settings
from controller.runtimes.buildahbox import open_buildah
registry, ref, files = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
space = Path("/tmp/space")
for name, text in files.items():
    (space / name).parent.mkdir(parents=True, exist_ok=True)
    (space / name).write_text(text)
print("docker socket:", os.path.exists("/var/run/docker.sock"), "uid:", os.getuid(), flush=True)
settings = Settings(data_dir=Path("/tmp/data"), registry=registry, image_builder="buildah")
with open_buildah(settings, "alice", lambda line: print(line, flush=True)) as engine:
    artifact = build(space, kind="image", cache_dir=Path("/tmp/cache"), log=lambda line: print(line, flush=True),
                     tag=ref, engine=engine)
print("ARTIFACT", artifact.image, flush=True)
"""
SPACE = {
    "README.md": "---\nsdk: docker\napp_port: 7860\n---\n",
    "Dockerfile": "FROM debian:bookworm-slim\n"
                  "RUN echo built in the worker pod > /built.txt\n"
                  # as an attacker: a RUN step reads what it can of the worker (its environment holds the secrets)
                  "RUN (cat /proc/1/environ; cat /proc/self/environ) | tr '\\0' '\\n' > /seen.txt 2>&1 || true\n"
                  "COPY hello.txt /hello.txt\n"
                  'CMD ["sh", "-c", "cat /built.txt /hello.txt"]\n',
    "hello.txt": "hello from a daemonless build\n",
}


@pytest.fixture(scope="module")
def worker_registry(image: tuple[docker.DockerClient, str], docker_host: str) -> Iterator[str]:
    """A registry (Debian's docker-registry) holding the bootstrapped Debian base, as a site's holds its bases."""
    if not registry_available() or not SECCOMP.is_file() or shutil.which("skopeo") is None:
        missing("the worker-pod build needs docker-registry, skopeo and containers-common's seccomp.json "
                "(scripts/test-services.sh installs them)")
    state = Path(os.environ.get("SPACEPORT_TEST_STATE", "/var/tmp/spaceport-test"))
    with local_registry(state / "worker-registry") as addr:  # kept between runs: the base's blobs are pushed once
        registry = f"{addr}/spaces"  # SPACEPORT_REGISTRY; builds pull missing bases from REGISTRY/spaceport/base-*
        subprocess.run(["skopeo", "copy", "-q", "--src-daemon-host", docker_host, "--dest-tls-verify=false",
                        f"docker-daemon:{DEBIAN_BASE}", f"docker://{registry}/{DEBIAN_BASE}"], check=True, timeout=600)
        yield registry


@pytest.mark.docker
def test_the_worker_builds_with_buildah_in_an_unprivileged_container_without_docker(
        image: tuple[docker.DockerClient, str], worker_registry: str) -> None:
    """The worker pod's security context (k8s/base/worker.yaml) on Docker: uid 1000, every capability dropped but
    SETUID, SETGID and SYS_CHROOT, privilege escalation allowed (newuidmap's file capabilities), containers-common's
    seccomp profile, vfs storage, no Docker socket. The build is pushed to the registry, and the test engine
    runs it only by pulling it from there. A RUN step cannot read the worker's environment."""
    client, tag = image
    registry = worker_registry
    ref = f"{registry}/alice-podbuild:{time.time_ns():x}"
    container = client.containers.run(
        tag, detach=True, entrypoint=["python", "-c", WORKER_BUILD, registry, ref, json.dumps(SPACE)],
        user="1000:1000", cap_drop=["ALL"], cap_add=["SETUID", "SETGID", "SYS_CHROOT"],
        security_opt=[f"seccomp={SECCOMP.read_text()}"], network_mode="host",
        environment={"STORAGE_DRIVER": "vfs", "WORKER_SECRET": CANARY})  # fmt: skip
    try:
        code = container.wait(timeout=600)["StatusCode"]
        log = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0 and f"ARTIFACT {ref}" in log, log[-3000:]
    assert "docker socket: False uid: 1000" in log and "buildah runs unprivileged here" in log
    pulled = client.images.pull(ref)
    try:
        output = client.containers.run(ref, remove=True, stdout=True, stderr=True)  # the image's own CMD
        assert output == b"built in the worker pod\nhello from a daemonless build\n"
        seen = _run(client, ref, "cat", "/seen.txt")
        assert "PATH=" in seen, seen  # the step did read: its own environment
        assert CANARY not in seen, "a RUN step read the worker's environment"
    finally:
        client.images.remove(pulled.id, force=True)
