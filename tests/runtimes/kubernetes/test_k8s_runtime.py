from __future__ import annotations

from typing import Any

import pytest

from builder.artifact import ImageArtifact
from controller.runtimes.base import Accelerators, HardwareSpec, InstanceSpec, RuntimeFailure, State
from controller.runtimes.kubernetes.objects import SiteConfig
from controller.runtimes.kubernetes.runtime import KubernetesRuntime

ART = ImageArtifact(image="spaceport/x:abc", port=7860)


def spec(space: str, accel: Accelerators | None = None, name: str | None = None) -> InstanceSpec:
    flavor = "cpu-basic" if accel is None else "t4-small"
    return InstanceSpec(
        name=name or space.replace("/", "-") + "-b1",
        space_id=space,
        artifact=ART,
        hardware=HardwareSpec(flavor=flavor, cpu=2, memory_mb=2048, accelerators=accel),
        labels={"spaceport/space": space},
    )


def t4(*ids: str) -> Accelerators:
    return Accelerators("nvidia-t4", ids or ("0",))


@pytest.fixture
def runtime(cluster: Any, site: SiteConfig) -> KubernetesRuntime:
    quotas = {"alice": {"nvidia-t4": 1}, "bob": {"nvidia-t4": 2}}
    return KubernetesRuntime(cluster, site, quotas=lambda owner: quotas.get(owner, {}))


async def test_start_applies_owner_then_instance_objects(runtime: KubernetesRuntime, cluster: Any) -> None:
    endpoint = await runtime.start(spec("alice/demo"))
    assert endpoint.url == "http://alice-demo-b1.spaceport-alice.svc.cluster.local:7860"
    assert [target for verb, target in cluster.calls if verb == "apply"] == [
        "Namespace//spaceport-alice",
        "ResourceQuota/spaceport-alice/spaceport-accelerators",
        "NetworkPolicy/spaceport-alice/spaceport-isolation",
        "Deployment/spaceport-alice/alice-demo-b1",
        "Service/spaceport-alice/alice-demo-b1",
    ]
    status = await runtime.status("alice-demo-b1")
    assert (status.state, status.message, status.endpoint) == (State.RUNNING, "ready", endpoint)
    assert status.labels == {"spaceport/space": "alice/demo"}
    assert cluster.get("ResourceQuota", "spaceport-alice", "spaceport-accelerators")["spec"]["hard"][
        "requests.nvidia.com/gpu"] == "1"


async def test_start_is_idempotent(runtime: KubernetesRuntime, cluster: Any) -> None:
    await runtime.start(spec("alice/demo"))
    await runtime.start(spec("alice/demo"))
    assert len(cluster.list_pods("spaceport.instance=alice-demo-b1")) == 1


async def test_sleep_scales_to_zero_and_wake_scales_back(runtime: KubernetesRuntime, cluster: Any) -> None:
    await runtime.start(spec("alice/gpu", t4()))
    assert cluster.list_pods("spaceport.instance=alice-gpu-b1")[0]["spec"]["nodeName"] == "t4-1"
    await runtime.stop("alice-gpu-b1")
    assert cluster.get("Deployment", "spaceport-alice", "alice-gpu-b1")["spec"]["replicas"] == 0
    assert cluster.list_pods("spaceport.instance=alice-gpu-b1") == []
    stopped = await runtime.status("alice-gpu-b1")
    assert (stopped.state, stopped.message) == (State.EXITED, "stopped (scaled to zero)")
    await runtime.start(spec("alice/gpu", t4()))  # wake = start again
    assert (await runtime.status("alice-gpu-b1")).message == "ready"


async def test_freeze_and_thaw(runtime: KubernetesRuntime, cluster: Any) -> None:
    await runtime.start(spec("alice/demo"))
    await runtime.freeze("alice-demo-b1")
    assert (await runtime.status("alice-demo-b1")).state == State.FROZEN
    assert cluster.list_pods("spaceport.instance=alice-demo-b1") == []
    await runtime.thaw("alice-demo-b1")
    thawed = await runtime.status("alice-demo-b1")
    assert (thawed.state, thawed.message) == (State.RUNNING, "ready")


async def test_remove_deletes_instance_but_keeps_owner_objects(runtime: KubernetesRuntime, cluster: Any) -> None:
    await runtime.start(spec("alice/demo"))
    await runtime.remove("alice-demo-b1")
    assert (await runtime.status("alice-demo-b1")).state == State.MISSING
    assert cluster.kinds() == [
        "Namespace//spaceport-alice",
        "NetworkPolicy/spaceport-alice/spaceport-isolation",
        "ResourceQuota/spaceport-alice/spaceport-accelerators",
    ]
    await runtime.remove("alice-demo-b1")  # idempotent
    await runtime.stop("alice-demo-b1")  # stopping a missing instance is fine
    with pytest.raises(RuntimeFailure, match="no instance"):
        await runtime.freeze("alice-demo-b1")


async def test_quota_exceeded_pending_says_why(runtime: KubernetesRuntime) -> None:
    await runtime.start(spec("alice/one", t4()))
    await runtime.start(spec("alice/two", t4("1")))
    status = await runtime.status("alice-two-b1")
    assert status.state == State.RUNNING
    assert status.message.startswith("pending: the owner's accelerator quota on the cluster is used up")
    assert "exceeded quota: spaceport-accelerators" in status.message
    assert "spaceport quota set" in status.message
    await runtime.stop("alice-one-b1")  # freeing the device lets the second one start
    await runtime.start(spec("alice/two", t4("1")))
    assert (await runtime.status("alice-two-b1")).message == "ready"


async def test_no_free_gpu_pending_then_scheduled_when_freed(runtime: KubernetesRuntime) -> None:
    await runtime.start(spec("bob/one", t4()))
    await runtime.start(spec("bob/two", t4()))  # quota 2 but the only schedulable T4 node has 1
    status = await runtime.status("bob-two-b1")
    assert status.state == State.RUNNING
    assert status.message.startswith("pending: no node has a free nvidia.com/gpu right now")
    assert "Insufficient nvidia.com/gpu" in status.message
    await runtime.remove("bob-one-b1")
    assert (await runtime.status("bob-two-b1")).message == "ready"


async def test_list_reports_every_instance(runtime: KubernetesRuntime) -> None:
    await runtime.start(spec("alice/demo"))
    await runtime.start(spec("bob/web"))
    await runtime.stop("bob-web-b1")
    listed = {s.name: s.state for s in await runtime.list()}
    assert listed == {"alice-demo-b1": State.RUNNING, "bob-web-b1": State.EXITED}


async def test_original_names_survive_sanitizing(runtime: KubernetesRuntime) -> None:
    await runtime.start(spec("Alice/Demo", name="Alice/Demo@b1"))
    status = await runtime.status("Alice/Demo@b1")
    assert (status.name, status.state) == ("Alice/Demo@b1", State.RUNNING)
    assert [s.name for s in await runtime.list()] == ["Alice/Demo@b1"]


async def test_logs(runtime: KubernetesRuntime, cluster: Any) -> None:
    await runtime.start(spec("alice/demo"))
    pod = cluster.list_pods("spaceport.instance=alice-demo-b1")[0]["metadata"]["name"]
    cluster.logs[pod] = ["Running on local URL:  http://0.0.0.0:7860", "ready"]
    assert [line async for line in runtime.logs("alice-demo-b1", follow=False)] == [
        "Running on local URL:  http://0.0.0.0:7860", "ready"]
    await runtime.stop("alice-demo-b1")
    assert [line async for line in runtime.logs("alice-demo-b1", follow=False)] == []


async def test_inventory_counts_schedulable_matching_nodes(runtime: KubernetesRuntime) -> None:
    assert await runtime.inventory() == {"nvidia-t4": 1, "nvidia-a10g": 2, "ascend-910b": 2}


async def test_venv_artifact_fails_before_touching_the_cluster(runtime: KubernetesRuntime, cluster: Any) -> None:
    from pathlib import Path

    from builder.artifact import VenvArtifact

    bad = InstanceSpec(name="x", space_id="a/b",
                       artifact=VenvArtifact(venv=Path("/v"), source=Path("/s"), command=("python",), port=1))
    with pytest.raises(RuntimeFailure):
        await runtime.start(bad)
    assert cluster.calls == []


async def test_without_quota_lookup_no_resource_quota(cluster: Any, site: SiteConfig) -> None:
    await KubernetesRuntime(cluster, site).start(spec("carol/app"))
    assert "ResourceQuota/spaceport-carol/spaceport-accelerators" not in cluster.kinds()
