"""A space's persistent storage on the fake cluster (issue 16): the claim at /data outlives its instances and
goes only when collection finds no space's storage key naming it; claims that are not this site's storage
(another installation's, a pod's ephemeral ~/.cache claim, an admin's) are never deleted. The claim's object
itself is tests/volumes/test_rules.py."""

from __future__ import annotations

import copy

import kubernetes_validate
from kubernetes import client as k8s

from builder.artifact import ImageArtifact
from controller.runtimes.base import InstanceSpec, Mount
from controller.runtimes.kubernetes.client import KubeClient
from controller.runtimes.kubernetes.objects import SiteConfig
from controller.runtimes.kubernetes.runtime import KubernetesRuntime
from controller.services.volumes import claim_name
from tests.runtimes.kubernetes.fake import FakeKube
from tests.runtimes.kubernetes.test_k8s_client import StubPool, split

ART = ImageArtifact(image="spaceport/x:abc", port=7860, health_path="/")
ALICE_KEY, BOB_KEY = "a" * 32, "b" * 32


def spec(space: str, key: str, build: int = 1) -> InstanceSpec:
    data = Mount(source="/unused", target="/data", read_only=False, claim=claim_name(key), size_bytes=20 * 10**9)
    return InstanceSpec(name=f"{space.replace('/', '-')}-b{build}", space_id=space, artifact=ART, mounts=(data,))


def claims(cluster: FakeKube) -> list[str]:
    return sorted(f"{ns}/{name}" for (kind, ns, name) in cluster.objects if kind == "PersistentVolumeClaim")


async def test_the_claim_outlives_instances_and_goes_when_no_space_holds_its_key(cluster: FakeKube,
                                                                                 site: SiteConfig) -> None:
    runtime = KubernetesRuntime(cluster, site)
    await runtime.start(spec("alice/notes", ALICE_KEY))
    await runtime.start(spec("bob/vault", BOB_KEY))
    alice, bob = f"spaceport-alice/{claim_name(ALICE_KEY)}", f"spaceport-bob/{claim_name(BOB_KEY)}"
    assert claims(cluster) == [alice, bob]
    claim = cluster.objects[("PersistentVolumeClaim", "spaceport-alice", claim_name(ALICE_KEY))]
    assert claim["metadata"]["labels"]["spaceport.storage"] == "persistent"
    kubernetes_validate.validate({k: v for k, v in claim.items() if k != "status"}, "1.37.0", strict=True)

    await runtime.remove("alice-notes-b1")  # an instance goes (restart, push, sleep): its data stays
    await runtime.start(spec("alice/notes", ALICE_KEY, build=2))
    assert claims(cluster) == [alice, bob]

    assert runtime.prune_claims_sync({claim_name(ALICE_KEY), claim_name(BOB_KEY)}) == []
    assert runtime.prune_claims_sync({claim_name(ALICE_KEY)}, dry_run=True) == [bob]  # listed, not deleted
    assert claims(cluster) == [alice, bob]
    assert runtime.prune_claims_sync({claim_name(ALICE_KEY)}) == [bob]  # bob's storage was deleted
    assert claims(cluster) == [alice]
    assert ("list_claims", "app.kubernetes.io/managed-by=spaceport,spaceport.site=spaceport,"
                           "spaceport.storage=persistent") in cluster.calls


async def test_pruning_never_touches_claims_that_are_not_this_sites_storage(cluster: FakeKube,
                                                                           site: SiteConfig) -> None:
    runtime = KubernetesRuntime(cluster, site)
    await runtime.start(spec("alice/notes", ALICE_KEY))
    mine = cluster.objects[("PersistentVolumeClaim", "spaceport-alice", claim_name(ALICE_KEY))]
    site_of_another = copy.deepcopy(mine)  # another installation on the same cluster
    site_of_another["metadata"].update(name="spaceport-data-other-site")
    site_of_another["metadata"]["labels"]["spaceport.site"] = "elsewhere"
    cache = copy.deepcopy(mine)  # like a pod's ephemeral ~/.cache claim: this site's, but not storage
    cache["metadata"].update(name="spaceport-data-cache")
    del cache["metadata"]["labels"]["spaceport.storage"]
    for other in (site_of_another, cache):
        cluster.objects[("PersistentVolumeClaim", "spaceport-alice", other["metadata"]["name"])] = other
    admins = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
              "metadata": {"name": "models", "namespace": "spaceport-alice"}, "spec": {}}
    cluster.objects[("PersistentVolumeClaim", "spaceport-alice", "models")] = admins

    assert runtime.prune_claims_sync(set()) == [f"spaceport-alice/{claim_name(ALICE_KEY)}"]
    assert claims(cluster) == ["spaceport-alice/models", "spaceport-alice/spaceport-data-cache",
                               "spaceport-alice/spaceport-data-other-site"]


class Unscoped(FakeKube):
    """A list that ignores its selector (a broken proxy, an old API server): the runtime checks again."""

    def list_claims(self, label_selector: str) -> list[dict[str, object]]:
        return super().list_claims("")


async def test_a_list_that_ignored_its_selector_deletes_nothing_foreign(site: SiteConfig) -> None:
    cluster = Unscoped()
    runtime = KubernetesRuntime(cluster, site)
    await runtime.start(spec("alice/notes", ALICE_KEY))
    foreign = copy.deepcopy(cluster.objects[("PersistentVolumeClaim", "spaceport-alice", claim_name(ALICE_KEY))])
    foreign["metadata"]["labels"]["spaceport.site"] = "elsewhere"
    foreign["metadata"]["name"] = "spaceport-data-elsewhere"
    cluster.objects[("PersistentVolumeClaim", "spaceport-alice", "spaceport-data-elsewhere")] = foreign
    assert runtime.prune_claims_sync(set()) == [f"spaceport-alice/{claim_name(ALICE_KEY)}"]
    assert claims(cluster) == ["spaceport-alice/spaceport-data-elsewhere"]


def test_the_client_lists_claims_across_namespaces_and_deletes_one() -> None:
    """KubeClient against the official client with only its HTTP pool stubbed (as test_k8s_client.py)."""
    api_client = k8s.ApiClient(k8s.Configuration(host="https://k8s.invalid"))
    pool = StubPool()
    api_client.rest_client.pool_manager = pool
    kube = KubeClient(api_client)
    item = {"metadata": {"name": "spaceport-data-x", "namespace": "spaceport-bob", "labels": {"spaceport.site": "s"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1"}}}}
    pool.responses += [(200, {"kind": "PersistentVolumeClaimList", "apiVersion": "v1", "metadata": {}, "items": [item]}),
                       (200, {"kind": "PersistentVolumeClaim", "apiVersion": "v1", **item})]
    [found] = kube.list_claims("spaceport.site=s,spaceport.storage=persistent")
    assert found["metadata"] == item["metadata"]
    assert kube.delete("PersistentVolumeClaim", "spaceport-data-x", "spaceport-bob") is True
    assert split(pool.requests[0]["url"]) == ("/api/v1/persistentvolumeclaims",
                                              {"labelSelector": ["spaceport.site=s,spaceport.storage=persistent"]})
    assert pool.requests[1]["method"] == "DELETE"
    assert split(pool.requests[1]["url"])[0] == "/api/v1/namespaces/spaceport-bob/persistentvolumeclaims/spaceport-data-x"
