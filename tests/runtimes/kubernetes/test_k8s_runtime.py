"""KubernetesRuntime on the fake cluster: what it sends, and how it reads the status fields a real API
server returns (handed in by each test, built from the official client's models; see fake.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from builder.artifact import ImageArtifact, VenvArtifact
from controller.dataplane.plane import mapping_of
from controller.proxy.types import Route
from controller.runtimes.base import Accelerators, HardwareSpec, InstanceSpec, RuntimeFailure, State
from controller.runtimes.kubernetes.objects import SiteConfig
from controller.runtimes.kubernetes.runtime import KubernetesRuntime
from controller.runtimes.kubernetes.status import service_address
from tests.runtimes.kubernetes import fake
from tests.runtimes.kubernetes.fake import FakeKube

ART = ImageArtifact(image="spaceport/x:abc", port=7860, health_path="/healthz")
SITE_SELECTOR = "app.kubernetes.io/managed-by=spaceport,spaceport.site=spaceport"
# What kube-scheduler (1.27+) writes into PodScheduled.message when no node has a free device.
NO_GPU = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
          "3 No preemption victims found for incoming pod..")
NO_NPU = ("0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
          "3 Insufficient huawei.com/Ascend910. preemption: 0/4 nodes are available: 1 Preemption is not "
          "helpful for scheduling, 3 No preemption victims found for incoming pod..")
# What the ReplicaSet controller records when the ResourceQuota admission plugin refuses the pod.
QUOTA_REFUSAL = ('pods "alice-two-b1-7d4b9c8f6-x2k9q" is forbidden: exceeded quota: spaceport-accelerators, '
                 "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, "
                 "limited: requests.nvidia.com/gpu=1")


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


class Probe:
    """Stands in for the HTTP GET through the Service: records the URLs, answers from a script."""

    def __init__(self, *answers: int | None) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []

    async def __call__(self, url: str) -> int | None:
        self.urls.append(url)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


QUOTAS = {"alice": {"nvidia-t4": 1}, "bob": {"nvidia-t4": 2, "nvidia-a10g": 1}}


@pytest.fixture
def probe() -> Probe:
    return Probe(200)


@pytest.fixture
def runtime(cluster: FakeKube, site: SiteConfig, probe: Probe) -> KubernetesRuntime:
    return KubernetesRuntime(cluster, site, quotas=lambda owner: QUOTAS.get(owner, {}), probe=probe)


async def test_start_applies_owner_then_instance_objects(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    endpoint = await runtime.start(spec("alice/demo"))
    cluster_ip = cluster.get("Service", "spaceport-alice", "alice-demo-b1")["spec"]["clusterIP"]
    assert endpoint.url == f"http://{cluster_ip}:7860"  # the address the API server allocated
    assert [target for verb, target in cluster.calls if verb == "apply"] == [
        "Namespace//spaceport-alice",
        "ResourceQuota/spaceport-alice/spaceport-accelerators",
        "NetworkPolicy/spaceport-alice/spaceport-isolation",
        "Deployment/spaceport-alice/alice-demo-b1",
        "Service/spaceport-alice/alice-demo-b1",
    ]
    status = await runtime.status("alice-demo-b1")
    assert (status.state, status.message, status.endpoint) == (State.RUNNING, "", endpoint)
    assert status.labels == {"spaceport/space": "alice/demo"}


async def test_resource_quota_mirrors_the_owners_quotas_at_every_start(cluster: FakeKube, site: SiteConfig) -> None:
    quotas = {"bob": {"nvidia-t4": 2, "nvidia-a10g": 1}}
    runtime = KubernetesRuntime(cluster, site, quotas=lambda owner: quotas.get(owner, {}), probe=Probe(200))
    await runtime.start(spec("bob/web"))
    hard = cluster.get("ResourceQuota", "spaceport-bob", "spaceport-accelerators")["spec"]["hard"]
    assert hard == {"requests.huawei.com/Ascend910": "0", "requests.nvidia.com/gpu": "3"}
    quotas["bob"] = {"ascend-910b": 1}  # an admin changed the quota: the next start applies it
    await runtime.start(spec("bob/web"))
    hard = cluster.get("ResourceQuota", "spaceport-bob", "spaceport-accelerators")["spec"]["hard"]
    assert hard == {"requests.huawei.com/Ascend910": "1", "requests.nvidia.com/gpu": "0"}


async def test_start_is_idempotent(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    await runtime.start(spec("alice/demo"))
    await runtime.start(spec("alice/demo"))
    assert len(cluster.list_pods("spaceport.instance=alice-demo-b1")) == 1


async def test_every_object_and_every_list_is_this_sites(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    await runtime.start(spec("alice/demo"))
    await runtime.status("alice-demo-b1")
    await runtime.list()
    await runtime.stop("alice-demo-b1")
    await runtime.remove("alice-demo-b1")
    assert cluster.selectors() and all(s.startswith(SITE_SELECTOR) for s in cluster.selectors()), cluster.selectors()
    for obj in cluster.objects.values():
        assert obj["metadata"]["labels"]["spaceport.site"] == "spaceport", obj["kind"]


def foreign_deployment(site_label: str) -> dict[str, object]:
    """Another installation's instance (its own prefix) in the same cluster."""
    labels = {"app.kubernetes.io/managed-by": "spaceport", "spaceport.site": site_label,
              "spaceport.instance": "alice-demo-b1"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "alice-demo-b1", "namespace": f"{site_label}-alice", "labels": labels,
                         "annotations": {"spaceport.instance-name": "alice-demo-b1"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"spaceport.instance": "alice-demo-b1"}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "x",
                                                           "ports": [{"containerPort": 80}]}]}}}}


async def test_another_installations_instances_are_invisible_and_never_removed(
        runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    """The reconciler removes every listed instance it does not know: a cluster-wide list would sweep the
    other installation's spaces, and a same-named instance must never be mistaken for ours."""
    cluster.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other-alice"}})
    cluster.put(foreign_deployment("other"))
    assert await runtime.list() == []
    assert (await runtime.status("alice-demo-b1")).state == State.MISSING
    await runtime.remove("alice-demo-b1")
    await runtime.stop("alice-demo-b1")
    assert ("Deployment", "other-alice", "alice-demo-b1") in cluster.objects
    assert not [c for c in cluster.calls if c[0] in ("delete", "scale")]


@pytest.mark.parametrize("labels", [{}, {"app.kubernetes.io/managed-by": "spaceport", "spaceport.site": "other"}])
async def test_a_namespace_that_is_not_this_sites_is_refused(
        runtime: KubernetesRuntime, cluster: FakeKube, labels: dict[str, str]) -> None:
    """Attacker or accident: an account named like an existing namespace's suffix (an admin's
    `spaceport-monitoring`, another installation's owner namespace) must not get apps, a quota and a
    NetworkPolicy applied into it."""
    cluster.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "spaceport-monitoring", "labels": labels}})
    with pytest.raises(RuntimeFailure, match="'spaceport-monitoring' already exists and belongs to"):
        await runtime.start(spec("monitoring/app"))
    assert not [c for c in cluster.calls if c[0] == "apply"]
    assert cluster.get("Namespace", "", "spaceport-monitoring")["metadata"]["labels"] == labels


async def test_sleep_scales_to_zero_and_wake_scales_back(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    await runtime.start(spec("alice/gpu", t4()))
    pod = cluster.list_pods("spaceport.instance=alice-gpu-b1")[0]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    await runtime.stop("alice-gpu-b1")
    assert cluster.get("Deployment", "spaceport-alice", "alice-gpu-b1")["spec"]["replicas"] == 0
    assert cluster.list_pods("spaceport.instance=alice-gpu-b1") == []
    stopped = await runtime.status("alice-gpu-b1")
    assert (stopped.state, stopped.message) == (State.EXITED, "stopped (scaled to zero)")
    await runtime.start(spec("alice/gpu", t4()))  # wake = start again
    assert cluster.get("Deployment", "spaceport-alice", "alice-gpu-b1")["spec"]["replicas"] == 1
    assert (await runtime.status("alice-gpu-b1")).state == State.RUNNING


async def test_freeze_and_thaw(runtime: KubernetesRuntime, cluster: FakeKube, probe: Probe) -> None:
    await runtime.start(spec("alice/demo"))
    await runtime.freeze("alice-demo-b1")
    assert (await runtime.status("alice-demo-b1")).state == State.FROZEN
    assert cluster.list_pods("spaceport.instance=alice-demo-b1") == []
    await runtime.thaw("alice-demo-b1")
    assert probe.urls == ["http://alice-demo-b1.spaceport-alice.svc.cluster.local:7860/healthz"]
    thawed = await runtime.status("alice-demo-b1")
    assert (thawed.state, thawed.message) == (State.RUNNING, "")


async def test_thaw_returns_only_once_the_new_pod_is_ready_and_answers(
        cluster: FakeKube, site: SiteConfig) -> None:
    """The reconciler routes visitors as soon as thaw returns: on Kubernetes thaw makes a new pod, so it
    waits for its readiness probe, then for an answer through the Service (endpoints lag readiness)."""
    probe = Probe(None, 503, 200)
    runtime = KubernetesRuntime(cluster, site, probe=probe)
    await runtime.start(spec("alice/demo"))
    await runtime.freeze("alice-demo-b1")
    cluster.pod_statuses["alice-demo-b1"] = [fake.unschedulable("0/3 nodes are available: 3 Too many pods."),
                                             fake.running_not_ready(), fake.running_not_ready(),
                                             fake.running_ready()]
    await runtime.thaw("alice-demo-b1")
    assert len(probe.urls) == 3  # never probed before the pod was Ready; then until the app answered < 500
    assert cluster.list_pods("spaceport.instance=alice-demo-b1")[0]["status"] == fake.running_ready()


async def test_thaw_of_a_crashing_app_stops_it_with_the_reason(cluster: FakeKube, site: SiteConfig) -> None:
    probe = Probe(200)
    runtime = KubernetesRuntime(cluster, site, probe=probe)
    await runtime.start(spec("alice/demo"))
    await runtime.freeze("alice-demo-b1")
    cluster.pod_statuses["alice-demo-b1"] = [fake.running_not_ready(), fake.crash_looping(3)]
    with pytest.raises(RuntimeFailure, match=r"did not come back from light sleep: the app keeps exiting \(exit code 3\)"):
        await runtime.thaw("alice-demo-b1")
    assert probe.urls == []
    assert cluster.get("Deployment", "spaceport-alice", "alice-demo-b1")["spec"]["replicas"] == 0
    after = await runtime.status("alice-demo-b1")  # the reconciler sees a crash, with the reason
    assert after.state == State.EXITED and "keeps exiting (exit code 3)" in after.message


async def test_thaw_gives_up_after_the_wake_timeout_saying_why(cluster: FakeKube, site: SiteConfig) -> None:
    runtime = KubernetesRuntime(cluster, replace(site, wake_timeout=0), probe=Probe(200))
    await runtime.start(spec("alice/gpu", t4()))
    await runtime.freeze("alice-gpu-b1")
    cluster.pod_statuses["alice-gpu-b1"] = [fake.unschedulable(NO_GPU)]
    with pytest.raises(RuntimeFailure, match="within 0 s") as caught:
        await runtime.thaw("alice-gpu-b1")
    assert "Waiting for a free nvidia.com/gpu" in str(caught.value)
    assert cluster.get("Deployment", "spaceport-alice", "alice-gpu-b1")["spec"]["replicas"] == 0
    assert (await runtime.status("alice-gpu-b1")).state == State.EXITED


async def test_a_pod_refused_by_the_resource_quota_says_why(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    cluster.replica_failures["alice-two-b1"] = fake.failed_create(QUOTA_REFUSAL)
    await runtime.start(spec("alice/two", t4("1")))
    assert cluster.list_pods("spaceport.instance=alice-two-b1") == []
    status = await runtime.status("alice-two-b1")
    assert status.state == State.RUNNING  # the ReplicaSet keeps retrying: not a crash
    assert status.message.startswith("Waiting: the owner's accelerator quota on the cluster is used up")
    assert QUOTA_REFUSAL in status.message and "spaceport quota set OWNER TYPE N" in status.message


@pytest.mark.parametrize(("message", "resource"), [(NO_GPU, "nvidia.com/gpu"), (NO_NPU, "huawei.com/Ascend910")])
async def test_an_unschedulable_pod_says_which_device_is_missing(
        runtime: KubernetesRuntime, cluster: FakeKube, message: str, resource: str) -> None:
    cluster.pod_statuses["bob-gpu-b1"] = [fake.unschedulable(message)]
    await runtime.start(spec("bob/gpu", t4()))
    status = await runtime.status("bob-gpu-b1")
    assert status.state == State.RUNNING
    assert status.message.startswith(f"Waiting for a free {resource}: no node of the cluster has one free right now (")
    assert "preemption" not in status.message  # the scheduler's preemption detail is noise to an owner
    assert status.message.endswith("The space starts when one is freed or a node is added.")
    assert [s.message for s in await runtime.list()] == [status.message]


async def test_a_pod_no_node_can_take_for_another_reason(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    taint = ("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes "
             "are available: 2 Preemption is not helpful for scheduling..")
    cluster.pod_statuses["bob-gpu-b1"] = [fake.unschedulable(taint)]
    await runtime.start(spec("bob/gpu", t4()))
    status = await runtime.status("bob-gpu-b1")
    assert status.message == ("Waiting for a node that can run the app (0/2 nodes are available: 2 node(s) didn't "
                              "match Pod's node affinity/selector.).")


async def test_remove_deletes_instance_but_keeps_owner_objects(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
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


async def test_logs(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    await runtime.start(spec("alice/demo"))
    pod = cluster.list_pods("spaceport.instance=alice-demo-b1")[0]["metadata"]["name"]
    cluster.logs[pod] = ["Running on local URL:  http://0.0.0.0:7860", "ready"]
    assert [line async for line in runtime.logs("alice-demo-b1", follow=False)] == [
        "Running on local URL:  http://0.0.0.0:7860", "ready"]
    await runtime.stop("alice-demo-b1")
    assert [line async for line in runtime.logs("alice-demo-b1", follow=False)] == []


async def test_venv_artifact_fails_before_touching_the_cluster(runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    bad = InstanceSpec(name="x", space_id="a/b",
                       artifact=VenvArtifact(venv=Path("/v"), source=Path("/s"), command=("python",), port=1))
    with pytest.raises(RuntimeFailure):
        await runtime.start(bad)
    assert cluster.calls == []


async def test_without_quota_lookup_no_resource_quota(cluster: FakeKube, site: SiteConfig) -> None:
    await KubernetesRuntime(cluster, site).start(spec("carol/app"))
    assert "ResourceQuota/spaceport-carol/spaceport-accelerators" not in cluster.kinds()


def test_the_factory_builds_the_site_from_settings_and_passes_the_quotas(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.config import Settings
    from controller.runtimes import factory
    from controller.runtimes.kubernetes.client import KubeClient

    for name, value in {"RUNTIME": "kubernetes", "KUBERNETES_NAMESPACE_PREFIX": "sp2-",
                        "KUBERNETES_IMAGE_PULL_SECRETS": "regcred, mirror-cred",
                        "KUBERNETES_RUNTIME_CLASS": "gvisor", "KUBERNETES_STORAGE_CLASS": "fast-nvme"}.items():
        monkeypatch.setenv(f"SPACEPORT_{name}", value)
    cluster = FakeKube()
    monkeypatch.setattr(KubeClient, "from_environment", classmethod(lambda cls, kubeconfig=None: cluster))
    settings = Settings(data_dir=tmp_path)
    runtime = factory.make_runtime(settings, quotas=lambda owner: {"nvidia-t4": 3})
    assert isinstance(runtime, KubernetesRuntime) and runtime.api is cluster
    site = runtime.site
    assert (site.namespace_prefix, site.site, site.image_pull_secrets, site.runtime_class_name, site.storage_class) == (
        "sp2-", "sp2", ("regcred", "mirror-cred"), "gvisor", "fast-nvme")
    assert runtime.quotas is not None and runtime.quotas("alice") == {"nvidia-t4": 3}


@pytest.mark.parametrize("prefix", ["", "Spaceport-", "sp_", "-sp", "x" * 31])
def test_a_namespace_prefix_that_cannot_name_namespaces_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    from pydantic import ValidationError

    from controller.config import Settings

    monkeypatch.setenv("SPACEPORT_KUBERNETES_NAMESPACE_PREFIX", prefix)
    with pytest.raises(ValidationError, match="kubernetes_namespace_prefix"):
        Settings(data_dir=tmp_path)


async def test_http_probe_reports_the_apps_answer_or_none(unused_tcp_port: int) -> None:
    from aiohttp import web

    from controller.runtimes.kubernetes.runtime import http_probe

    app = web.Application()
    app.router.add_get("/healthz", lambda request: web.Response(status=503))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        assert await http_probe(f"http://127.0.0.1:{unused_tcp_port}/healthz") == 503
        assert await http_probe(f"http://127.0.0.1:{unused_tcp_port}/missing") == 404
    finally:
        await runner.cleanup()
    assert await http_probe(f"http://127.0.0.1:{unused_tcp_port}/healthz") is None  # nothing listens


def test_the_app_mirrors_the_owners_quotas_from_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app hands make_runtime the database's quotas (explicit, else the platform default)."""
    from controller.app import create_app
    from controller.config import Settings
    from controller.db.models import PlatformSetting
    from controller.runtimes.kubernetes.client import KubeClient
    from controller.services import accounts, quotas
    from controller.services.platform import Platform

    monkeypatch.setattr(KubeClient, "from_environment", classmethod(lambda cls, kubeconfig=None: FakeKube()))
    settings = Settings(data_dir=tmp_path, runtime="kubernetes")
    platform = Platform(settings)
    platform.migrate()
    try:
        with platform.tx() as session:
            accounts.create_user(session, "alice")
            quotas.set_quota(session, platform, "alice", "nvidia-t4", 2)
            session.add(PlatformSetting(key="default_quotas", value={"ascend-910b": 1}))
        runtime = create_app(settings, platform=platform).state.runtime
        assert isinstance(runtime, KubernetesRuntime) and runtime.quotas is not None
        assert runtime.quotas("alice") == {"nvidia-t4": 2, "nvidia-a10g": 0, "ascend-910b": 1}
        assert runtime.quotas("bob") == {"nvidia-t4": 0, "nvidia-a10g": 0, "ascend-910b": 1}
    finally:
        platform.dispose()


async def test_the_route_goes_to_the_services_cluster_ip_which_the_data_plane_can_carry(
        runtime: KubernetesRuntime, cluster: FakeKube) -> None:
    """HAProxy's runtime-added servers take addresses, not names: a route to the Service's DNS name would
    leave every Kubernetes space on the Python proxy. The ClusterIP stays the same through sleep and wake
    (the Deployment is scaled, the Service kept), and a redeploy's new Service gets its own."""
    first = await runtime.start(spec("alice/demo"))
    route = Route(space_id="alice/demo", slug="alice-demo", target=first.url)
    assert mapping_of(route, "spaces.example.org") is not None
    assert mapping_of(replace(route, target="http://alice-demo-b1.spaceport-alice.svc.cluster.local:7860"),
                      "spaces.example.org") is None
    await runtime.stop("alice-demo-b1")
    assert (await runtime.start(spec("alice/demo"))).url == first.url  # woken: same Service, same address
    other = await runtime.start(spec("alice/demo", name="alice-demo-b2"))
    assert other.url != first.url


@pytest.mark.parametrize("spec_ip, expected", [
    ("10.96.0.11", "10.96.0.11"), ("fd00:10:96::a", "fd00:10:96::a"), ("None", None), ("", None), (None, None)])
def test_service_address_is_the_allocated_ip_or_none(spec_ip: str | None, expected: str | None) -> None:
    assert service_address({"kind": "Service", "spec": {"clusterIP": spec_ip}}) == expected
