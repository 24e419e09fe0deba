"""Who reaches the ZeroGPU device API's address (netns.LISTENER_ADDRESS), on the local (bwrap) and docker
runtimes: an instance on a zero-* flavor reaches exactly the listener's port there, nothing else on that
address; an instance on any other flavor reaches nothing there; the rule goes with the instance.

The listener here is a TCP banner server on that address (two ports: the device API's and another one),
so this checks the network path only; tests/zerogpu/test_zerogpu_live.py checks the real device API
through it from a sandboxed Gradio app with the real `spaces` package. The probe app and image are the
egress tests' (tests/security/test_egress.py)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uv

from builder.artifact import ImageArtifact, VenvArtifact
from controller.runtimes import netns
from controller.runtimes.base import Endpoint, InstanceSpec, Runtime
from controller.runtimes.health import wait_healthy
from controller.runtimes.local import LocalRuntime
from controller.runtimes.sandbox import sandbox_status
from tests.security.test_egress import HARDWARE, PROBE_APP, _probe_image, ask
from tests.support.tiers import missing


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, int]]:
    """(device API port, another port) on LISTENER_ADDRESS, each answering a banner."""
    if not sandbox_status().available:
        missing("needs root, iptables and the sandbox")
    netns.ensure_listener_address()
    servers = []
    for banner in (b"device-api", b"other-port"):

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, banner: bytes = banner) -> None:
            writer.write(banner)
            await writer.drain()
            writer.close()

        servers.append(await asyncio.start_server(accept, netns.LISTENER_ADDRESS, 0))
    yield servers[0].sockets[0].getsockname()[1], servers[1].sockets[0].getsockname()[1]
    for server in servers:
        server.close()
        await server.wait_closed()


def zero_env(port: int) -> dict[str, str]:
    return {"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": f"http://{netns.LISTENER_ADDRESS}:{port}/zerogpu/x/"}


async def reach(endpoint: Endpoint, port: int) -> object:
    result = await ask(endpoint, f"/probe?to={netns.LISTENER_ADDRESS}:{port}")
    return result["detail"] if result["ok"] else False


def rules() -> str:
    return subprocess.run(["iptables", "-w", "-S", netns.LISTENER_ALLOW_CHAIN], capture_output=True, text=True).stdout


async def check(runtime: Runtime, specs: dict[str, InstanceSpec], ports: tuple[int, int]) -> None:
    endpoints = {}
    for name, spec in specs.items():
        endpoints[name] = await runtime.start(spec)
        assert await wait_healthy(endpoints[name], timeout=60), (await runtime.status(spec.name)).message
    device, other = ports
    assert await reach(endpoints["zero"], device) == "device-api"
    assert await reach(endpoints["zero"], other) is False  # only the listener's port
    assert await reach(endpoints["plain"], device) is False  # not on a zero-* flavor: nothing
    assert await reach(endpoints["plain"], other) is False


@pytest.fixture
def probe_dir() -> Iterator[Path]:
    """The probe app and a stdlib venv in a world-readable directory (the sandbox's uid reads them)."""
    root = Path(tempfile.mkdtemp(prefix="zg-reach-", dir="/tmp"))
    root.chmod(0o755)
    (root / "probe").mkdir(mode=0o755)
    (root / "probe" / "app.py").write_text(PROBE_APP)
    subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", "/usr/bin/python3", str(root / "venv")], check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def test_local_sandboxes_reach_the_device_api_only_on_zero_flavors(listener: tuple[int, int], tmp_path: Path,
                                                                         probe_dir: Path) -> None:
    runtime = LocalRuntime(tmp_path / "state", sandbox="bwrap")
    artifact = VenvArtifact(probe_dir / "venv", probe_dir / "probe", ("python", "app.py"), 7860)
    specs = {kind: InstanceSpec(name=f"zg{kind}", space_id=f"mallory/zg{kind}", hardware=HARDWARE, artifact=artifact,
                                env=zero_env(listener[0]) if kind == "zero" else {}) for kind in ("zero", "plain")}
    try:
        await check(runtime, specs, listener)
        record = runtime._dir("zgzero").read()
        assert record is not None and record.slot is not None
        host_if = netns.Slot(record.slot).host_if
        assert f"--comment {host_if} " in rules()
    finally:
        for spec in specs.values():
            await runtime.remove(spec.name)
    assert f"--comment {host_if} " not in rules()  # removed with the instance


async def test_docker_containers_reach_the_device_api_only_on_zero_flavors(listener: tuple[int, int],
                                                                          docker_host: str) -> None:
    from controller.runtimes.docker import DockerRuntime

    image = _probe_image(docker_host)
    runtime = DockerRuntime(docker_host, network="spaceport-zerogpu-test", site="zgtest")
    artifact = ImageArtifact(image=image, port=7860)
    specs = {kind: InstanceSpec(name=f"zg{kind}", space_id=f"mallory/zg{kind}", hardware=HARDWARE, artifact=artifact,
                                env=zero_env(listener[0]) if kind == "zero" else {}) for kind in ("zero", "plain")}
    try:
        started = await runtime.start(specs["plain"])  # the network exists from here on
        if not Path(f"/sys/class/net/{runtime.bridge()}").exists():
            missing(f"the docker engine is not on this machine ({started})")
        await check(runtime, specs, listener)
        named = [line for line in rules().splitlines() if " --comment " in line]
        assert any("zgzero" in line for line in named) and not any("zgplain" in line for line in named)
        await runtime.stop("zgzero")
        assert not [line for line in rules().splitlines() if "zgzero" in line]  # closed at stop
    finally:
        for spec in specs.values():
            await runtime.remove(spec.name)
        with contextlib.suppress(Exception):
            runtime.client.networks.get("spaceport-zerogpu-test").remove()
        runtime.close()


def test_the_guard_is_first_in_input_and_drops_all_but_listed_interfaces() -> None:
    if not sandbox_status().available:
        missing("needs root and iptables")
    netns.ensure_listener_address()
    netns.ensure_firewall()  # inserts its own jump at 1: the guard must still come first
    listed = [x for x in subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True).stdout.splitlines()
              if x.startswith("-A ")]
    assert listed[0] == f"-A INPUT -d {netns.LISTENER_ADDRESS}/32 -j {netns.LISTENER_CHAIN}"
    assert sum(netns.LISTENER_CHAIN + " " in f"{x} " for x in listed) == 1
    chain = subprocess.run(["iptables", "-w", "-S", netns.LISTENER_CHAIN], capture_output=True, text=True).stdout.splitlines()
    assert chain[1:] == [f"-A {netns.LISTENER_CHAIN} -i lo -j RETURN", f"-A {netns.LISTENER_CHAIN} -j {netns.LISTENER_ALLOW_CHAIN}",
                         f"-A {netns.LISTENER_CHAIN} -j DROP"]
