"""Daemonless builds (builder/buildah.py, issue 14): buildah builds the same context as the docker builder,
pushes to a real registry, and the Docker engine pulls an image whose config equals the docker-built one's.
RUN steps are contained: as an attacker, a RUN step cannot reach the host (where the controller listens)
nor read the worker's environment or data dir.

Needs root (the build network namespace), buildah, Debian's docker-registry and the test Docker engine.
buildah's storage stays under SPACEPORT_TEST_STATE between runs (its layer cache, like the engine's)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest

from builder.artifact import ImageArtifact
from builder.baseimages import python_base, sdk_base
from builder.build import build
from builder.buildah import BUILDAH, BuildahEngine, is_loopback_registry
from builder.errors import BuildFailure
from controller.config import Settings
from controller.runtimes.buildahbox import open_buildah
from tests.support.images import ensure_base_images
from tests.support.registry import local_registry, registry_available
from tests.support.server import free_port

CONFIG_KEYS = ("Cmd", "Entrypoint", "Env", "ExposedPorts", "User", "WorkingDir", "Labels")
CANARY = "spaceport-canary-7f3a9c"


def test_loopback_registries_only_skip_tls() -> None:
    assert is_loopback_registry("127.0.0.1:5000/spaces/x:1") and is_loopback_registry("localhost:5000/x")
    assert is_loopback_registry("[::1]:5000/x")
    assert not is_loopback_registry("registry.local:5000/spaces/x:1") and not is_loopback_registry("10.0.0.1:5000/x")


def test_buildah_needs_a_registry() -> None:
    with pytest.raises(BuildFailure, match="SPACEPORT_REGISTRY is not set"):
        BuildahEngine(registry="")


def test_bud_argv_is_contained_and_cached() -> None:
    engine = BuildahEngine(registry="r:5000/s", root=Path("/s"), wrap=("/usr/bin/nsenter", "--net=/n", "--"),
                           pid_namespace=True)
    argv = engine.bud_argv(Path("/ctx"), tag="r:5000/s/a-b:1", build_args={"B": "2", "A": "1"}, labels={"l": "v"},
                           no_cache=False)
    assert argv[:3] == ["/usr/bin/nsenter", "--net=/n", "--"] and argv[3:8] == ["/usr/bin/unshare", "--pid", "--fork",
                                                                                 "--kill-child", "--mount-proc"]
    assert argv[argv.index("--isolation") + 1] == "chroot" and "--layers" in argv and "--pull=never" in argv
    assert argv[argv.index("--build-arg") + 1] == "A=1" and argv[-1] == "/ctx" and "--no-cache" not in argv
    assert "--tls-verify=false" not in engine.push_argv("r:5000/s/a-b:1")


@pytest.fixture(scope="module")
def env(docker_host: str) -> Iterator[tuple[docker.DockerClient, str, Path]]:
    if os.geteuid() != 0 or not os.access(BUILDAH, os.X_OK) or not registry_available():
        pytest.skip("needs root, buildah and docker-registry (scripts/test-services.sh installs them)")
    ensure_base_images(docker_host)
    client = docker.DockerClient(base_url=docker_host, timeout=600)
    state = Path(os.environ.get("SPACEPORT_TEST_STATE", "/var/tmp/spaceport-test"))
    storage = state / "buildah"
    with local_registry(state / "buildah-registry") as addr:  # kept: the bases' blobs are pushed once
        for base in (python_base("3.11"), sdk_base("3.11")):
            _seed_base(client, docker_host, f"{addr}/spaces", storage, base)
        yield client, f"{addr}/spaces", storage
    client.close()


def _seed_base(client: docker.DockerClient, docker_host: str, registry: str, storage: Path, base: str) -> None:
    """Push a base to the registry (as a site does); buildah's storage re-pulls it when the engine's changed."""
    wanted = (client.images.get(base).id or "").removeprefix("sha256:")
    pushed = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{registry}/{base}"],
                            capture_output=True, text=True, check=False).stdout
    if wanted not in pushed:  # the manifest names its config digest, which is the engine's image id
        subprocess.run(["skopeo", "copy", "-q", "--src-daemon-host", docker_host, "--dest-tls-verify=false",
                        f"docker-daemon:{base}", f"docker://{registry}/{base}"], check=True, timeout=900)
    engine = _engine(registry, storage)
    have = subprocess.run([*engine.base_argv(), "images", "--no-trunc", "--format", "{{.ID}}", base],
                          capture_output=True, text=True, check=False).stdout.strip().removeprefix("sha256:")
    if have and have != wanted:
        subprocess.run([*engine.base_argv(), "rmi", "-f", base], capture_output=True, check=False)


def _engine(registry: str, storage: Path, **changes: object) -> BuildahEngine:
    engine = BuildahEngine(registry=registry, root=storage / "root", runroot=storage / "run", storage_driver="overlay")
    return dataclasses.replace(engine, **changes)  # type: ignore[arg-type]


def _contained(registry: str, storage: Path, data_dir: Path) -> Iterator[BuildahEngine]:
    settings = Settings(data_dir=data_dir, registry=registry, image_builder="buildah")
    with open_buildah(settings, "alice", lambda _line: None) as engine:
        yield dataclasses.replace(engine, root=storage / "root", runroot=storage / "run", storage_driver="overlay")


def _build(source: Path, tag: str, log: list[str], **kwargs: object) -> ImageArtifact:
    artifact = build(source, kind="image", cache_dir=source.parent / "cache", log=log.append, tag=tag, **kwargs)  # type: ignore[arg-type]
    assert isinstance(artifact, ImageArtifact)
    return artifact


def _compare_with_docker(client: docker.DockerClient, registry: str, storage: Path, source: Path, tmp: Path,
                         slug: str) -> tuple[ImageArtifact, dict[str, object]]:
    ref = f"{registry}/{slug}:{time.time_ns():x}"
    log: list[str] = []
    docker_artifact = _build(source, ref, log, client=client)
    docker_config = client.images.get(ref).attrs["Config"]
    client.images.remove(ref)
    buildah_log: list[str] = []
    for engine in _contained(registry, storage, tmp / "data"):
        buildah_artifact = _build(source, ref, buildah_log, engine=engine)
    assert buildah_artifact == docker_artifact
    assert any(line.startswith("STEP ") for line in buildah_log) and f"pushed {ref}" in buildah_log
    pulled = client.images.pull(ref)
    config = pulled.attrs["Config"]
    assert _config(config) == _config(docker_config)
    return buildah_artifact, config


def _config(config: dict[str, object]) -> dict[str, object]:
    """The fields a runtime uses. Env as a mapping: buildah moves a redefined variable to the end of the list
    where docker replaces it in place (same environment); an empty Entrypoint list is no entrypoint."""
    view = {key: config.get(key) for key in CONFIG_KEYS}
    view["Env"] = dict(str(item).split("=", 1) for item in config.get("Env") or [])  # type: ignore[attr-defined]
    view["Entrypoint"] = config.get("Entrypoint") or None
    return view


def _serve(client: docker.DockerClient, artifact: ImageArtifact, path: str = "/") -> httpx.Response:
    port = free_port()
    container = client.containers.run(artifact.image, detach=True, ports={f"{artifact.port}/tcp": ("127.0.0.1", port)},
                                      environment=dict(artifact.env))
    try:
        for _ in range(120):
            try:
                return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.25)
        pytest.fail(f"{artifact.image} never answered: {container.logs()[-1000:]!r}")
    finally:
        container.remove(force=True)
        client.images.remove(artifact.image, force=True)


@pytest.mark.docker
@pytest.mark.docker
def test_base_images_come_from_the_registry(env: tuple[docker.DockerClient, str, Path], tmp_path: Path) -> None:
    """A worker with empty storage pulls REGISTRY/spaceport/base-python:3.11 as spaceport/base-python:3.11."""
    _client, registry, _storage = env
    engine = _engine(registry, tmp_path / "fresh", storage_driver="vfs")  # vfs: no mount left behind
    assert engine.available(python_base("3.11"))
    assert not engine.available("spaceport/base-nothing:1")


@pytest.mark.docker
def test_static_space_equals_the_docker_build_and_serves(env: tuple[docker.DockerClient, str, Path],
                                                          space: Callable[[str], Path], tmp_path: Path) -> None:
    client, registry, storage = env
    artifact, _config = _compare_with_docker(client, registry, storage, space("static"), tmp_path, "alice-static")
    assert _serve(client, artifact).status_code == 200


@pytest.mark.docker
def test_user_dockerfile_equals_the_docker_build_and_serves(env: tuple[docker.DockerClient, str, Path],
                                                             space: Callable[[str], Path], tmp_path: Path) -> None:
    """FROM python:3.11-slim (alias), useradd, USER, WORKDIR, pip install through the build's egress proxy."""
    client, registry, storage = env
    artifact, config = _compare_with_docker(client, registry, storage, space("docker"), tmp_path, "alice-docker")
    assert config["User"] == "user" and config["Labels"]["io.spaceport.sdk"] == "docker"
    assert _serve(client, artifact).status_code == 200


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP service on every host address (like the controller, Redis or PostgreSQL)."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.sendall(b"REACHED\n")
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    server.close()


ATTACK = r'''
import glob, os, socket, sys, urllib.request
port, data_dir = int(sys.argv[1]), sys.argv[2]
hosts = sys.argv[3:]
for host in hosts:
    try:
        socket.create_connection((host, port), timeout=3).recv(16)
        print("ATTACK-REACHED", host)
    except OSError as exc:
        print("blocked", host, type(exc).__name__)
for proxy in [os.environ.get("HTTPS_PROXY")] if os.environ.get("HTTPS_PROXY") else []:
    for host in hosts:
        try:
            s = socket.create_connection(proxy.removeprefix("http://").split(":"), timeout=3)
            s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            answer = s.recv(64)
            print("ATTACK-REACHED-VIA-PROXY" if b" 200 " in answer else "blocked proxy", host, answer[:20])
        except OSError as exc:
            print("blocked proxy", host, type(exc).__name__)
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        if b"''' + CANARY + r'''" in open(path, "rb").read():
            print("ATTACK-ENV", path)
    except OSError:
        pass
print("ATTACK-DATA" if os.path.exists(data_dir) else "no data dir")
print("processes", len(glob.glob("/proc/[0-9]*")))
'''


def _attack_space(root: Path, port: int, data_dir: Path) -> Path:
    root.mkdir()
    (root / "README.md").write_text("---\nsdk: docker\napp_port: 8080\n---\n")
    (root / "attack.py").write_text(ATTACK)
    hosts = " ".join(_host_addresses())
    (root / "Dockerfile").write_text(
        "FROM python:3.11-slim\nCOPY attack.py /attack.py\n"
        f"RUN python3 /attack.py {port} {data_dir} {hosts}\nCMD [\"python3\", \"-m\", \"http.server\", \"8080\"]\n")
    return root


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()][:6]


@pytest.mark.docker
def test_run_steps_cannot_reach_the_host_nor_read_the_worker(env: tuple[docker.DockerClient, str, Path],
                                                             host_listener: int, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """As an attacker: RUN steps try the host's addresses (controller, Redis, PostgreSQL listen there), the
    worker's environment (a canary secret) and its data dir. The same step without the containment reaches
    the host (so the attack itself works)."""
    _client, registry, storage = env
    monkeypatch.setenv("SPACEPORT_TEST_CANARY", CANARY)  # the worker's environment holds a secret
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text(CANARY)
    source = _attack_space(tmp_path / "attack", host_listener, data_dir)
    log: list[str] = []
    for engine in _contained(registry, storage, data_dir):
        _build(source, f"{registry}/mallory-attack:{time.time_ns():x}", log, engine=engine, no_cache=True)
    text = "\n".join(log)
    assert "blocked 127.0.0.1" in text, text
    assert "ATTACK" not in text, text
    assert "no data dir" in text
    processes = int(text.split("processes ", 1)[1].split()[0])
    assert processes < 10, "a RUN step sees only buildah's own processes"
    bare: list[str] = []
    _build(source, f"{registry}/mallory-bare:{time.time_ns():x}", bare, no_cache=True,
           engine=_engine(registry, storage, pid_namespace=False))
    assert "ATTACK-REACHED 127.0.0.1" in "\n".join(bare), "control: without the containment the host is reachable"


@pytest.mark.docker
def test_cancel_stops_a_running_buildah_build(env: tuple[docker.DockerClient, str, Path], tmp_path: Path) -> None:
    _client, registry, storage = env
    source = tmp_path / "slow"
    source.mkdir()
    (source / "README.md").write_text("---\nsdk: docker\n---\n")
    marker = f"spaceport-cancel-{uuid.uuid4().hex}"  # in the RUN step's shell command line, and nowhere else
    (source / "Dockerfile").write_text(f"FROM python:3.11-slim\nRUN echo started && sleep 300 && echo {marker}\n")
    cancel = threading.Event()
    log: list[str] = []

    def on_line(line: str) -> None:
        log.append(line)
        if line.strip() == "started":
            cancel.set()

    from builder.errors import BuildCancelled

    with pytest.raises(BuildCancelled):
        build(source, kind="image", cache_dir=tmp_path / "c", log=on_line, tag=f"{registry}/x-slow:1", cancel=cancel,
              no_cache=True, engine=_engine(registry, storage))
    leftover = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout
    assert not leftover.strip(), "the RUN step's processes are gone"
    shutil.rmtree(source)
