"""Docker-tier builder tests: real image builds on the test engine (base images bootstrapped locally)."""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest

from builder import pythons
from builder.artifact import ImageArtifact
from builder.baseimages import python_base
from builder.bootstrap import HOST_CA_DIR, bootstrap_images, ensure_host_python
from builder.build import build
from builder.buildpacks.base import RepoFiles
from builder.errors import BUILD_ERROR, BuildFailure
from builder.image import prepare_dockerfile
from builder.spaceconfig import load_space_config
from tests.support.images import ensure_base_images

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    ensure_base_images(docker_host)
    client = docker.DockerClient(base_url=docker_host, timeout=600)
    yield client
    client.close()


def image_build(client: docker.DockerClient, source: Path, tag: str, log: list[str], **kwargs: object) -> ImageArtifact:
    artifact = build(source, kind="image", cache_dir=source.parent / "cache", log=log.append, tag=tag, client=client, **kwargs)  # type: ignore[arg-type]
    assert isinstance(artifact, ImageArtifact)
    return artifact


def wait_for_http(url: str, attempts: int = 120) -> httpx.Response:
    for _ in range(attempts):
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            time.sleep(0.25)
    raise AssertionError(f"{url} never answered")


def test_bootstrap_is_idempotent(client: docker.DockerClient) -> None:
    progress: list[str] = []
    ready = bootstrap_images(client, python_versions=("3.11",), progress=progress.append)
    assert ready == ["spaceport/base-debian:bookworm", "spaceport/base-python:3.11", "spaceport/base-sdk:3.11",
                     "spaceport/base-node:18", "spaceport/base-uv:latest"]
    assert all(line.endswith(": present") for line in progress)


def test_docker_space_builds_through_alias_and_serves(client: docker.DockerClient, space: Callable[[str], Path]) -> None:
    log: list[str] = []
    ca_dir = HOST_CA_DIR if any(HOST_CA_DIR.glob("*.crt")) else None
    artifact = image_build(client, space("docker"), "spaceport/test-builder-docker:a", log, ca_dir=ca_dir)
    assert (artifact.port, artifact.health_path) == (8080, "/")
    assert any("python:3.11-slim -> spaceport/base-python:3.11" in line for line in log)
    assert client.images.get(artifact.image).labels["io.spaceport.sdk"] == "docker"
    container = client.containers.run(artifact.image, detach=True, init=True, ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        response = wait_for_http(f"http://127.0.0.1:{port}/")
        assert response.status_code == 200 and "hello from a docker space (six 1.17.0)" in response.text
    finally:
        container.remove(force=True)


def test_gradio_image_warm_rebuild_reuses_dependency_layers(client: docker.DockerClient, space: Callable[[str], Path]) -> None:
    source = space("gradio")
    first = image_build(client, source, "spaceport/test-builder-gradio:a", [])
    image = client.images.get(first.image)
    assert image.attrs["Config"]["User"] == "1000" and image.attrs["Config"]["WorkingDir"] == "/home/user/app"
    assert "GRADIO_SERVER_NAME=0.0.0.0" in image.attrs["Config"]["Env"]
    assert image.labels["io.spaceport.sdk"] == "gradio" and first.port == 7860

    (source / "app.py").write_text((source / "app.py").read_text() + f"\n# change {uuid.uuid4().hex}\n")  # unique per run
    log: list[str] = []
    second = image_build(client, source, "spaceport/test-builder-gradio:b", log)
    pip_step = next(i for i, line in enumerate(log) if "RUN uv pip install 'gradio[oauth]'" in line)
    assert "Using cache" in log[pip_step + 1]
    copy_step = next(i for i, line in enumerate(log) if line.startswith("Step") and "COPY --chown=1000:1000 . " in line)
    assert "Using cache" not in log[copy_step + 1]
    assert client.images.get(second.image).id != image.id


def test_unresolvable_base_image_names_image_and_fix(client: docker.DockerClient, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nsdk: docker\n---\n")
    (tmp_path / "Dockerfile").write_text("FROM rstudio/plumber:v1\nCMD [\"R\"]\n")
    with pytest.raises(BuildFailure) as info:
        build(tmp_path, kind="image", cache_dir=tmp_path, log=lambda _line: None, tag="spaceport/test-builder-r:a", client=client)
    assert info.value.stage == BUILD_ERROR
    for needle in ("rstudio/plumber:v1", "SPACEPORT_BASE_IMAGE_ALIASES='rstudio/plumber:v1=", "SPACEPORT_REGISTRY_MIRROR"):
        assert needle in info.value.message
    assert "base-python" not in info.value.message


def test_node_space_builds_on_debians_node_and_serves(client: docker.DockerClient, tmp_path: Path) -> None:
    """`FROM node:20-slim` (an HF-style Node Dockerfile) builds on spaceport/base-node:18 with a warning."""
    (tmp_path / "README.md").write_text("---\nsdk: docker\napp_port: 3000\n---\n")
    (tmp_path / "server.js").write_text(
        "require('http').createServer((q, r) => r.end('node ' + process.version + ' uid ' + process.getuid()))"
        ".listen(3000, '0.0.0.0');\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM node:20-slim\nUSER node\nWORKDIR /home/node/app\nCOPY --chown=node . .\nEXPOSE 3000\n"
        "CMD [\"node\", \"server.js\"]\n")
    log: list[str] = []
    artifact = image_build(client, tmp_path, "spaceport/test-builder-node:a", log)
    assert any("warning: Node 20 is not available on this server" in line and "spaceport/base-node:18" in line for line in log)
    container = client.containers.run(artifact.image, detach=True, init=True, ports={"3000/tcp": ("127.0.0.1", None)})
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["3000/tcp"][0]["HostPort"]
        response = wait_for_http(f"http://127.0.0.1:{port}/")
        assert response.status_code == 200 and response.text.startswith("node v18.") and "uid 1000" in response.text
    finally:
        container.remove(force=True)


def test_alpine_node_dockerfile_builds_with_the_apk_shim(client: docker.DockerClient, tmp_path: Path) -> None:
    """node:*-alpine Dockerfiles run `apk add`: on the Debian stand-in it installs the Debian packages."""
    (tmp_path / "README.md").write_text("---\nsdk: docker\napp_port: 3000\n---\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM node:18-alpine AS base\nRUN apk add --no-cache libc6-compat jq=1.6-r0 && jq --version && yarn --version\n"
        "RUN addgroup --system --gid 1001 nodejs && adduser --system --uid 1001 nextjs\nUSER nextjs\n")
    log: list[str] = []
    image_build(client, tmp_path, "spaceport/test-builder-alpine:a", log, no_cache=True)
    assert any("alpine variant is replaced by a Debian one" in line for line in log)
    assert any("spaceport apk shim: apt-get install jq" in line for line in log), log[-20:]
    assert any(line.startswith("jq-1.") for line in log), log[-20:]
    with pytest.raises(BuildFailure) as info:
        (tmp_path / "Dockerfile").write_text("FROM node:18-alpine\nRUN apk fix\n")
        image_build(client, tmp_path, "spaceport/test-builder-alpine:b", [])
    assert "use apt-get" in info.value.message.splitlines()[0], info.value.message


def test_cjk_file_names_build_and_land_intact(client: docker.DockerClient, tmp_path: Path) -> None:
    """Non-ASCII names (ModelScope/HF repos have many) in the build context, the Dockerfile and .dockerignore."""
    (tmp_path / "README.md").write_text("---\nsdk: docker\n---\n")
    (tmp_path / "资产").mkdir()
    (tmp_path / "资产" / "班級課表.html").write_text("<p>课表</p>\n")
    (tmp_path / "模型 说明.txt").write_text("说明\n")
    (tmp_path / "忽略.log").write_text("ignored\n")
    (tmp_path / ".dockerignore").write_text("# 忽略日志\n*.log\n")
    (tmp_path / "Dockerfile").write_text(
        "# 中文注释\nFROM debian:bookworm-slim\nCOPY [\"资产/班級課表.html\", \"/data/\"]\nCOPY . /app\n"
        "RUN test -f '/app/模型 说明.txt' && test ! -e /app/忽略.log && cat /data/班級課表.html\n")
    log: list[str] = []
    artifact = image_build(client, tmp_path, "spaceport/test-builder-cjk:a", log, no_cache=True)
    assert any("<p>课表</p>" in line for line in log), log
    out = client.containers.run(artifact.image, ["cat", "/app/资产/班級課表.html", "/app/模型 说明.txt"], remove=True)
    assert out.decode() == "<p>课表</p>\n说明\n"


def test_failing_step_is_build_error_with_output(client: docker.DockerClient, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nsdk: docker\n---\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.11\nRUN echo spaceport-boom && exit 7\n")
    with pytest.raises(BuildFailure) as info:
        build(tmp_path, kind="image", cache_dir=tmp_path, log=lambda _line: None, tag="spaceport/test-builder-fail:a", client=client)
    assert info.value.stage == BUILD_ERROR
    first_line = info.value.message.splitlines()[0]
    assert re.fullmatch(r"Dockerfile step 2/\d+ `RUN echo spaceport-boom && exit 7` failed \(exit code 7\): spaceport-boom",
                        first_line), first_line
    assert "Removing intermediate container" not in first_line
    assert "returned a non-zero code: 7" in info.value.message


def test_unavailable_python_version_falls_back_for_generated_dockerfiles(client: docker.DockerClient, space: Callable[[str], Path]) -> None:
    source = space("gradio")
    (source / "README.md").write_text('---\nsdk: gradio\npython_version: "3.10"\n---\n')
    config = load_space_config(source)
    log: list[str] = []
    text = prepare_dockerfile(source, config, RepoFiles.scan(source), {}, None, None, client, log.append)
    assert text.startswith("FROM spaceport/base-sdk:3.11\n")
    assert any("Python 3.10" in line and "building with the nearest, Python 3.11" in line for line in log)


def test_time_limit_stops_a_silent_step(client: docker.DockerClient, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nsdk: docker\n---\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.11\nRUN sleep 120\n")
    with pytest.raises(BuildFailure, match="time limit"):
        build(tmp_path, kind="image", cache_dir=tmp_path, log=lambda _line: None, tag="spaceport/test-builder-slow:a",
              client=client, time_limit=2)


def test_a_python_debian_lacks_is_made_from_a_host_interpreter(client: docker.DockerClient) -> None:
    """`spaceport images bootstrap --python 3.10`: Debian bookworm has only 3.11, this host (pyenv) has 3.10."""
    env = pythons.discovery_env(dict(os.environ), Path(tempfile.gettempdir()), pythons.PythonSource())
    version = next((v for v in ("3.10", "3.9", "3.12") if pythons.find(v, env) is not None), None)
    if version is None:
        pytest.skip("no Python 3.9, 3.10 or 3.12 on this host for uv to find")
    interpreter = pythons.find(version, env)
    name = f"spaceport-test/host-python:{version}-{uuid.uuid4().hex[:8]}"
    log: list[str] = []
    ensure_host_python(client, name, python_base("3.11"), version, interpreter, log.append)
    try:
        script = ("import sys, ssl, sqlite3, ctypes, venv, os; print('%d.%d' % sys.version_info[:2], sys.prefix, "
                  "sys.base_prefix, os.getuid(), os.access(sys.prefix, os.W_OK))")
        out = client.containers.run(name, ["python3", "-c", script], user="1000", remove=True).decode().split()
        assert out == [version, "/opt/venv", "/opt/python", "1000", "True"]  # the venv is uid 1000's, as in base-python
        lib = f"/opt/python/lib/python{version}"
        left = client.containers.run(name, ["sh", "-c", f"ls {lib}/site-packages | wc -l; ls {lib}/test | wc -l"],
                                     remove=True).decode().split()
        assert left == ["0", "0"]  # none of the host's own packages, nor its test suite
    finally:
        client.images.remove(name, force=True)
