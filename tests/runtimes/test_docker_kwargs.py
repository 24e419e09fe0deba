"""Accelerators in the docker runtime's create kwargs (no GPU or NPU here: create, never start)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import docker
import pytest

from builder.artifact import ImageArtifact
from controller.runtimes.appenv import LABEL_INSTANCE
from controller.runtimes.base import Accelerators, HardwareSpec, InstanceSpec, State
from controller.runtimes.docker import LABEL_SITE, DockerRuntime, build_create_kwargs


def _spec(name: str, image: str, acc: Accelerators | None) -> InstanceSpec:
    return InstanceSpec(name=name, space_id="alice/gpu", artifact=ImageArtifact(image=image, port=7860),
                        hardware=HardwareSpec(flavor="t4-small", cpu=2, memory_mb=1024, pids=128, accelerators=acc))


def test_ascend_kwargs_map_devices_and_driver() -> None:
    kwargs = build_create_kwargs(_spec("npu", "img:1", Accelerators("ascend-910b", ("2",))))
    assert kwargs["devices"][0] == "/dev/davinci2:/dev/davinci2:rwm"
    assert {"/dev/davinci_manager:/dev/davinci_manager:rwm", "/dev/hisi_hdc:/dev/hisi_hdc:rwm"} <= set(kwargs["devices"])
    assert kwargs["volumes"] == {"/usr/local/Ascend/driver": {"bind": "/usr/local/Ascend/driver", "mode": "ro"}}
    assert kwargs["init"] is True and kwargs["user"] == "1000:1000"
    assert kwargs["ports"] == {"7860/tcp": ("127.0.0.1", None)}
    assert kwargs["pids_limit"] == 128 and kwargs["nano_cpus"] == 2_000_000_000 and kwargs["mem_limit"] == "1024m"


@pytest.mark.docker
def test_t4_container_requests_the_assigned_gpu(docker_host: str, test_image: str) -> None:
    runtime = DockerRuntime(docker_host)
    spec = _spec(f"t4probe-{uuid.uuid4().hex[:8]}", test_image, Accelerators("nvidia-t4", ("1",)))
    runtime.ensure_network()
    container = runtime.client.containers.create(**build_create_kwargs(spec))
    try:
        host_config = runtime.client.api.inspect_container(container.id)["HostConfig"]
        (request,) = host_config["DeviceRequests"]
        assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["1"]
        assert request["Capabilities"] == [["gpu"]]
        assert host_config["Init"] is True and host_config["PidsLimit"] == 128
    finally:
        container.remove(force=True)
        runtime.close()


@pytest.mark.docker
def test_apps_network_disables_inter_container_traffic(docker_host: str) -> None:
    runtime = DockerRuntime(docker_host)
    try:
        runtime.ensure_network()
        network = runtime.client.networks.get("spaceport-apps")
        assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    except docker.errors.NotFound:
        pytest.fail("network not created")
    finally:
        runtime.close()


@pytest.mark.docker
def test_list_skips_a_container_removed_while_it_is_listed(docker_host: str, test_image: str) -> None:
    """A container removed between the engine's list and its inspect (another replica, a delete) is gone,
    not an error: list() once raised NotFound here and the reconciler's pass failed with it."""
    site = f"race-{uuid.uuid4().hex[:8]}"
    runtime = DockerRuntime(docker_host, site=site)
    labels = {LABEL_SITE: site}
    made = {name: runtime.client.containers.create(test_image, labels={**labels, LABEL_INSTANCE: name})
            for name in ("gone", "kept")}  # fmt: skip
    real_inspect = runtime.client.api.inspect_container

    def inspect_after_a_removal(container_id: str) -> object:
        if container_id == made["gone"].id:
            made["gone"].remove(force=True)
        return real_inspect(container_id)

    runtime.client.api.inspect_container = inspect_after_a_removal  # type: ignore[method-assign]
    try:
        listed = asyncio.run(runtime.list())
        assert [status.name for status in listed] == ["kept"]
        assert listed[0].state is State.EXITED
    finally:
        runtime.client.api.inspect_container = real_inspect  # type: ignore[method-assign]
        for container in made.values():
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        runtime.close()
