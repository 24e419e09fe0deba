"""Run and serve on the DOCKER runtime, end to end: `git push` -> image build (base images resolved for a
registry-less site) -> container on the `spaceport-apps` network -> health -> route -> proxy; crash,
deep sleep and wake of the same container, controller restart (adoption), and app isolation (no ICC)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import docker
import httpx
import pytest
from docker.models.containers import Container
from gradio_client import Client

from controller.config import Settings
from controller.db.models import utcnow
from controller.runtimes.docker import LABEL_SITE, site_id
from controller.services.platform import Platform
from controller.services.sleep import sweep
from tests.support.images import ensure_base_images
from tests.support.server import TRUSTED_PATHS, LiveServer, make_server
from tests.support.spaces import push_fixture, wait_stage

pytestmark = pytest.mark.docker
SETTLED = {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR"}
SITE: list[str] = []  # the module server's site id (its containers carry it as a label)


@pytest.fixture(scope="module")
def engine(docker_host: str) -> Iterator[docker.DockerClient]:
    ensure_base_images(docker_host)
    client = docker.DockerClient(base_url=docker_host, timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_host: str, engine: docker.DockerClient) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("docker-run"), SPACEPORT_RUNTIME="docker", SPACEPORT_PATH_APPS=TRUSTED_PATHS,
                      SPACEPORT_DOCKER_HOST=docker_host).start()
    SITE[:] = [site_id(srv.data_dir)]
    try:
        yield srv
    finally:
        srv.close()
        left = engine.containers.list(all=True, filters={"label": f"{LABEL_SITE}={site_id(srv.data_dir)}"})
        assert not left, f"remove-all-instances left containers: {[c.name for c in left]}"


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.create_user("alice")


@pytest.fixture(scope="module")
def hello(server: LiveServer, token: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Docker-sdk fixture pushed once as alice/hello and RUNNING."""
    push_fixture(server, tmp_path_factory.mktemp("hello"), "docker", "alice", "hello", token)
    state = wait_stage(server, "alice/hello", SETTLED, timeout=300)
    assert state["stage"] == "RUNNING", state
    return "alice/hello"


@pytest.fixture(scope="module")
def greet(server: LiveServer, token: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Gradio fixture pushed once as alice/greet (an image build on this runtime) and RUNNING."""
    push_fixture(server, tmp_path_factory.mktemp("greet"), "gradio", "alice", "greet", token)
    state = wait_stage(server, "alice/greet", SETTLED, timeout=400)
    assert state["stage"] == "RUNNING", state
    return "alice/greet"


def host_get(server: LiveServer, slug: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers={"Host": f"{slug}.localhost:{server.port}"}, timeout=60)


def the_container(engine: docker.DockerClient, space: str) -> Container:
    """The one container of a space on this test's site (other servers may share the engine)."""
    labels = [f"spaceport.space={space}", f"{LABEL_SITE}={SITE[0]}"]
    found = engine.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
    assert len(found) == 1, [(c.name, c.status) for c in found]
    return found[0]


def wait_container_status(engine: docker.DockerClient, space: str, status: str, timeout: float = 60) -> Container:
    deadline = time.monotonic() + timeout
    container = the_container(engine, space)
    while container.status != status and time.monotonic() < deadline:
        time.sleep(0.2)
        container.reload()
    assert container.status == status, (container.name, container.status)
    return container


def build_log(server: LiveServer, space: str, token: str) -> str:
    response = httpx.get(f"{server.url}/api/spaces/{space}/logs/build", params={"follow": "false"},
                         headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_docker_space_builds_through_base_image_alias_and_serves(server: LiveServer, token: str, hello: str,
                                                                  engine: docker.DockerClient) -> None:
    log = build_log(server, hello, token)
    assert "base image python:3.11-slim -> spaceport/base-python:3.11" in log, log[-3000:]
    path = httpx.get(f"{server.url}/apps/alice/hello/", timeout=60)
    assert path.status_code == 200 and path.text.startswith("hello from a docker space (six 1.17.0)"), path.text
    host = host_get(server, "alice-hello")
    assert host.status_code == 200 and "six 1.17.0" in host.text, host.text
    assert the_container(engine, hello).status == "running"


def test_unresolvable_base_image_is_a_build_error_naming_the_fix(server: LiveServer, token: str, tmp_path: Path) -> None:
    files = {"README.md": "---\nsdk: docker\napp_port: 8080\n---\n",
             "Dockerfile": "FROM ghcr.io/nowhere/thing:1\nCMD [\"true\"]\n"}
    push_fixture(server, tmp_path, files, "alice", "nowhere", token)
    state = wait_stage(server, "alice/nowhere", SETTLED | {"APP_STARTING"}, timeout=120)
    assert state["stage"] == "BUILD_ERROR", state
    message = str(state["errorMessage"])
    assert "ghcr.io/nowhere/thing:1" in message, message
    assert "SPACEPORT_BASE_IMAGE_ALIASES" in message and "SPACEPORT_REGISTRY_MIRROR" in message, message


def test_gradio_space_runs_in_a_locked_down_container(server: LiveServer, greet: str, engine: docker.DockerClient) -> None:
    client = Client(f"{server.url}/apps/alice/greet/", verbose=False)
    assert client.predict("Docker", api_name="/greet") == "Hello Docker!"
    container = the_container(engine, greet)
    host_config = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "1000:1000"
    uid = container.exec_run(["python3", "-c", "import os; print(os.getuid())"]).output.decode().strip()
    assert uid == "1000", uid
    assert host_config["Init"] is True
    assert host_config["Memory"] > 0 and host_config["PidsLimit"] and host_config["PidsLimit"] > 0
    bindings = [b for ports in host_config["PortBindings"].values() for b in ports]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    published = [b for ports in container.attrs["NetworkSettings"]["Ports"].values() for b in ports or []]
    assert published and all(b["HostIp"] == "127.0.0.1" for b in published), published
    assert list(container.attrs["NetworkSettings"]["Networks"]) == ["spaceport-apps"]
    network = engine.networks.get("spaceport-apps")
    assert network.attrs["Options"].get("com.docker.network.bridge.enable_icc") == "false"


def test_app_containers_cannot_reach_each_other(hello: str, greet: str, engine: docker.DockerClient) -> None:
    source = the_container(engine, hello)
    target = the_container(engine, greet)
    target_ip = target.attrs["NetworkSettings"]["Networks"]["spaceport-apps"]["IPAddress"]
    assert target_ip
    probe = ("import socket,sys\n"
             "s=socket.socket(); s.settimeout(3)\n"
             "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('CONNECTED')\n"
             "except OSError as e:\n print('BLOCKED', e)\n")
    # the probe itself works: the target answers on its own port from inside its own container
    own = target.exec_run(["python3", "-c", probe, "127.0.0.1", "7860"]).output.decode()
    assert "CONNECTED" in own, own
    across = source.exec_run(["python3", "-c", probe, target_ip, "7860"]).output.decode()
    assert "BLOCKED" in across, across


def test_killed_container_is_reported_then_restarted(server: LiveServer, hello: str, engine: docker.DockerClient) -> None:
    container = the_container(engine, hello)
    container.kill()
    error = wait_stage(server, hello, {"RUNTIME_ERROR"}, timeout=60)
    assert "exited" in str(error["errorMessage"]), error
    wait_stage(server, hello, {"RUNNING"}, timeout=120)
    assert wait_container_status(engine, hello, "running").id == container.id  # same spec: the container restarts
    assert host_get(server, "alice-hello").status_code == 200


def test_controller_restart_keeps_the_same_container_running_and_routed(server: LiveServer, hello: str,
                                                                         engine: docker.DockerClient) -> None:
    before = wait_container_status(engine, hello, "running")
    server.stop(remove_apps=False)
    before.reload()
    assert before.status == "running"
    server.start()
    wait_stage(server, hello, {"RUNNING"}, timeout=60)
    response = host_get(server, "alice-hello")
    assert response.status_code == 200 and "six" in response.text, response.text
    after = the_container(engine, hello)
    assert after.id == before.id and after.status == "running"
    assert after.attrs["State"]["StartedAt"] == before.attrs["State"]["StartedAt"]  # not restarted


def _sweep(server: LiveServer, ahead: timedelta) -> int:
    platform = Platform(Settings(data_dir=server.data_dir))
    try:
        return sweep(platform, now=utcnow() + ahead)
    finally:
        platform.dispose()


def test_deep_sleep_stops_the_container_and_a_visit_starts_the_same_one(server: LiveServer, hello: str,
                                                                         engine: docker.DockerClient) -> None:
    running = wait_container_status(engine, hello, "running")
    assert _sweep(server, timedelta(hours=49)) >= 1
    _sweep(server, timedelta(hours=51))
    wait_stage(server, hello, {"SLEEPING"}, timeout=60)
    stopped = wait_container_status(engine, hello, "exited", timeout=60)
    assert stopped.id == running.id  # stopped, not removed
    response = host_get(server, "alice-hello")
    assert response.status_code == 200 and "six" in response.text, response.text
    wait_stage(server, hello, {"RUNNING"}, timeout=60)
    woken = wait_container_status(engine, hello, "running")
    assert woken.id == running.id
