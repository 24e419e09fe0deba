"""Old-version Spaces build and run unchanged on the DOCKER runtime (issue 21's offline-ish tier).

The fixtures (tests/fixtures/spaces/old-gradio3, old-gradio4) are ours, written in the style of 2023
Spaces: gradio 3.x `gr.inputs`/`gr.outputs`, `import pkg_resources`, `from huggingface_hub import
HfFolder`, unpinned transitive dependencies, and (4.x) a requirements.txt naming another gradio than
`sdk_version`. With today's libraries they fail (pkg_resources gone in setuptools 81, HfFolder gone in
huggingface_hub 1.0, starlette 1.0's TemplateResponse); resolved as of the SDK release they must reach
RUNNING, serve their UI through the proxy and see the hosted run environment. They need PyPI (the build
installs from it), nothing else from the internet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import docker
import httpx
import pytest

from tests.support.images import ensure_base_images
from tests.support.server import LiveServer, make_server
from tests.support.spaces import push_fixture, wait_stage

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]  # image builds from PyPI
SETTLED = {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR"}
ENV_CHECK = re.compile(r"env-check: SYSTEM=(\S+) HOME=(\S+) uid=(\d+) writable=(\S+) gradio=([\w.]+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[LiveServer]:
    ensure_base_images(docker_host)
    srv = make_server(tmp_path_factory.mktemp("oldrepos"), SPACEPORT_RUNTIME="docker",
                      SPACEPORT_DOCKER_HOST=docker_host).start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.create_user("olduser")


def build_log(server: LiveServer, space: str, token: str) -> str:
    response = httpx.get(f"{server.url}/api/spaces/{space}/logs/build", params={"follow": "false"},
                         headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def deploy(server: LiveServer, token: str, tmp: object, fixture: str, name: str) -> str:
    space = f"olduser/{name}"
    push_fixture(server, tmp, fixture, "olduser", name, token)  # type: ignore[arg-type]
    state = wait_stage(server, space, SETTLED, timeout=1500)
    assert state["stage"] == "RUNNING", (state, build_log(server, space, token)[-4000:])
    return space


def page(server: LiveServer, slug: str) -> str:
    response = httpx.get(f"{server.url}/", headers={"Host": f"{slug}.localhost:{server.port}"}, timeout=60)
    assert response.status_code == 200, response.text[:2000]
    return response.text


@pytest.mark.parametrize(
    ("fixture", "name", "version", "dated"),
    [("old-gradio3", "sentiment", "3.35.2", "2023-06-"), ("old-gradio4", "squares", "4.8.0", "2023-12-")],
)
def test_old_gradio_space_reaches_running_with_the_libraries_of_its_time(
    server: LiveServer, token: str, tmp_path: object, fixture: str, name: str, version: str, dated: str,
    docker_host: str,
) -> None:
    space = deploy(server, token, tmp_path, fixture, name)
    log = build_log(server, space, token)
    assert "the sdk_version pin is installed last, so it wins over requirements.txt" in log, log[-3000:]
    assert f"unpinned dependencies resolve as of {dated}" in log, log[-3000:]
    html = page(server, f"olduser-{name}")
    found = ENV_CHECK.search(html)
    assert found is not None, html[:3000]
    assert found.groups() == ("spaces", "/home/user", "1000", "True", version)  # sdk_version won over requirements
    engine = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        container = next(c for c in engine.containers.list(filters={"label": f"spaceport.space={space}"}))
        probe = "import huggingface_hub, setuptools; print(huggingface_hub.__version__, setuptools.__version__)"
        out = container.exec_run(["python", "-c", probe]).output.decode().split()
        assert int(out[0].split(".")[0]) == 0, out  # huggingface_hub < 1 (HfFolder)
        assert int(out[1].split(".")[0]) < 81, out  # pkg_resources still there
    finally:
        engine.close()
