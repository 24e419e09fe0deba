"""Persistent storage and volumes (issue 16): the rules on untrusted input, the service on SQLite and
PostgreSQL, and the Kubernetes claim. The live journeys (restart, rebuild, sleep, controller restart on the
local and docker runtimes) are tests/volumes/test_live.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
from sqlalchemy.orm import Session

from builder.artifact import ImageArtifact
from controller.db.models import Space
from controller.domain import volumes as vol
from controller.domain.errors import BadRequest, Conflict, SpaceportError
from controller.domain.hardware import load_catalog
from controller.runtimes.base import InstanceSpec, Mount, RuntimeFailure
from controller.runtimes.kubernetes import objects
from controller.runtimes.kubernetes.objects import SiteConfig
from controller.services import accounts, duplicate, lifecycle, spaces, volumes
from controller.services.platform import Platform
from tests.support.gitrepo import git, make_repo

SIZES = dict(vol.DEFAULT_TIER_BYTES)


def space_volume(**fields: object) -> dict[str, object]:
    return {"type": "space", "source": "alice/weights", "mountPath": "/models", **fields}


# ---- the rules -----------------------------------------------------------------------------------------------

def test_tiers_and_their_sizes_are_the_hosted_ones() -> None:
    assert SIZES == {"small": 20 * 10**9, "medium": 150 * 10**9, "large": 10**12}
    assert vol.parse_tier("medium", SIZES) == "medium"
    with pytest.raises(BadRequest, match=r"Unknown storage tier 'huge'.*small.*medium.*large"):
        vol.parse_tier("huge", SIZES)
    with pytest.raises(BadRequest, match="large storage tier is not offered on this site; offered: small, medium"):
        vol.parse_tier("large", {**SIZES, "large": 0})


def test_storage_grows_but_never_shrinks_in_place() -> None:
    vol.check_tier_change("small", "large", SIZES)
    vol.check_tier_change(None, "small", SIZES)
    with pytest.raises(BadRequest, match=r"cannot be decreased to small.*delete_space_storage"):
        vol.check_tier_change("medium", "small", SIZES)


@pytest.mark.parametrize("path", ["/models", "/data", "/mnt/weights", "/models/v1.2_final-x"])
def test_mount_paths_that_are_allowed(path: str) -> None:
    assert vol.check_mount_path(path) == path


@pytest.mark.parametrize("path", [
    "models", "", "/", "//models", "/models/", "/models/../etc", "/../../root", "/./models", "/models/..",
    "/etc", "/etc/passwd", "/proc/self", "/usr/lib/x", "/home/user/app", "/home", "/tmp/x", "/dev/shm", "/sys",
    "/root", "/run/secrets", "/bin", "/lib64", "/models\x00", "/mod els", "/modèles", "/-rf", "/" + "a" * 300,
    "/a/" + "/".join(["b"] * 120), 7, None,
])
def test_mount_paths_outside_a_fresh_directory_are_refused(path: object) -> None:
    with pytest.raises(BadRequest, match="mountPath"):
        vol.check_mount_path(path)


@pytest.mark.parametrize("kind", ["model", "dataset", "bucket"])
def test_repos_spaceport_does_not_host_are_refused_naming_what_is_supported(kind: str) -> None:
    with pytest.raises(BadRequest, match=f"type '{kind}' are not supported.*'space'.*request_space_storage"):
        vol.parse_volumes({"volumes": [space_volume(type=kind)]})


def test_a_space_volume_is_read_only_at_a_revision() -> None:
    [parsed] = vol.parse_volumes({"volumes": [space_volume(revision="v1", path="weights/small")]})
    assert parsed.to_json() == {"type": "space", "source": "alice/weights", "mountPath": "/models", "revision": "v1",
                                "readOnly": True, "path": "weights/small"}
    with pytest.raises(BadRequest, match="always mounted read-only"):
        vol.parse_volumes({"volumes": [space_volume(readOnly=False)]})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("source", "../../etc", "not allowed"), ("source", "alice", "OWNER/NAME"), ("source", ["x"], "OWNER/NAME"),
    ("revision", "--upload-pack=touch /tmp/x", "branch, tag or commit"), ("revision", "main/../../x", "branch"),
    ("path", "../other", "without '.' or '..'"), ("path", "a/../../b", "without"), ("mount_path", None, "mountPath"),
    ("extra", 1, "Unknown volume field"),
])
def test_hostile_volume_fields_are_refused(field: str, value: object, message: str) -> None:
    item = space_volume(**{field: value})
    if field == "mount_path":
        item.pop("mountPath")
    with pytest.raises(BadRequest, match=message):
        vol.parse_volumes({"volumes": [item]})


def test_volume_lists_are_bounded_and_do_not_overlap_storage() -> None:
    with pytest.raises(BadRequest, match="At most 8 volumes"):
        vol.parse_volumes({"volumes": [space_volume(mountPath=f"/m{i}") for i in range(9)]})
    with pytest.raises(BadRequest, match="overlap"):
        vol.parse_volumes({"volumes": [space_volume(), space_volume(mountPath="/models/inner")]})
    at_data = vol.parse_volumes({"volumes": [space_volume(mountPath="/data/models")]})
    vol.check_storage_path(at_data, has_storage=False)
    with pytest.raises(BadRequest, match="/data holds this space's persistent storage"):
        vol.check_storage_path(at_data, has_storage=True)
    with pytest.raises(BadRequest, match=r'Send \{"volumes"'):
        vol.parse_volumes([space_volume()])


# ---- the service, on SQLite and PostgreSQL ----------------------------------------------------------------------

def make_space(session: Session, platform: Platform, owner: str, name: str, *, private: bool = False) -> Space:
    user = accounts.get_account(session, owner) or accounts.create_user(session, owner)
    return spaces.create_space(session, platform.settings.repos_dir, accounts.Principal(user, "write"), owner, name,
                               private=private)


def push_files(platform: Platform, space: Space, files: dict[str, str], tmp: Path) -> str:
    repo = make_repo(tmp / f"{space.name}-src", files)
    bare = platform.settings.repos_dir / space.owner.name / f"{space.name}.git"
    git(bare, "fetch", "-q", str(repo), "HEAD:refs/heads/main")  # no receive hooks: the files only
    sha = git(repo, "rev-parse", "HEAD").stdout.strip()
    space.head_sha = sha
    return sha


def test_storage_lifecycle_and_the_delete_rule(db_platform: Platform) -> None:
    platform = db_platform
    with platform.tx() as session:
        space = make_space(session, platform, "alice", "notes")
        space.target_build_id = 1
        volumes.request_storage(session, platform, space, "small")
        assert (space.storage_tier, space.generation, space.stage) == ("small", 2, "APP_STARTING")
        key = space.storage_key
        assert key and len(key) == 32
        [mount] = volumes.instance_mounts(session, platform, space)
        assert mount == Mount(source=str(platform.settings.volumes_dir / "storage" / key), target="/data",
                              read_only=False, claim=f"spaceport-data-{key[:20]}", size_bytes=20 * 10**9)
        volumes.request_storage(session, platform, space, "medium")  # grows, same data
        assert (space.storage_tier, space.storage_key) == ("medium", key)
        with pytest.raises(BadRequest, match="cannot be decreased"):
            volumes.request_storage(session, platform, space, "small")
        with pytest.raises(Conflict, match=r"alice/notes has medium persistent storage \(139.7 GiB at /data\).*"
                                           r"delete_space_storage.*then delete the space"):
            lifecycle.delete_space(session, platform, space)
    (platform.settings.volumes_dir / "storage" / key / "kept.txt").write_text("x")
    with platform.tx() as session:
        found = spaces.find_space(session, "alice", "notes")
        assert found is not None and found.storage_key == key  # the refused delete changed nothing
        volumes.delete_storage(session, platform, found)
        assert found.storage_tier is None and volumes.instance_mounts(session, platform, found) == ()
    assert not (platform.settings.volumes_dir / "storage" / key).exists()  # its data went after the commit
    with platform.tx() as session:
        again = spaces.find_space(session, "alice", "notes")
        assert again is not None
        with pytest.raises(BadRequest, match="has no persistent storage"):
            volumes.delete_storage(session, platform, again)
        lifecycle.delete_space(session, platform, again)  # no storage: deleted at once


def test_a_duplicate_does_not_get_the_storage(db_platform: Platform) -> None:
    platform = db_platform
    with platform.tx() as session:
        space = make_space(session, platform, "alice", "notes")
        volumes.request_storage(session, platform, space, "small")
        bob = accounts.create_user(session, "bob")
        copy = duplicate.duplicate(session, platform, accounts.Principal(bob, "write"), "alice", "notes",
                                   duplicate.DuplicateRequest(target="bob/notes")).space
        assert (copy.storage_tier, copy.storage_key, copy.volumes) == (None, None, None)
        assert volumes.instance_mounts(session, platform, copy) == ()


def test_space_volumes_mount_public_or_own_spaces_only(db_platform: Platform, tmp_path: Path) -> None:
    platform = db_platform
    with platform.tx() as session:
        app = make_space(session, platform, "alice", "app")
        weights = make_space(session, platform, "alice", "weights", private=True)
        sha = push_files(platform, weights, {"README.md": "w\n", "small/w.txt": "0.5\n"}, tmp_path)
        secret = make_space(session, platform, "carol", "secret", private=True)
        push_files(platform, secret, {"README.md": "secret\n"}, tmp_path)
        volumes.set_volumes(session, platform, app, {"volumes": [space_volume(path="small")]})
        assert app.volumes == [{"type": "space", "source": "alice/weights", "mountPath": "/models", "revision": "main",
                                "readOnly": True, "path": "small"}]
        [mount] = volumes.instance_mounts(session, platform, app)
        assert mount.target == "/models" and mount.read_only and mount.claim == ""
        assert Path(mount.source) == platform.settings.volumes_dir / "exports" / "alice" / "weights" / sha / "small"
        assert (Path(mount.source) / "w.txt").read_text() == "0.5\n"
        with pytest.raises(BadRequest, match="private and not alice's"):  # another owner's private space
            volumes.set_volumes(session, platform, app, {"volumes": [space_volume(source="carol/secret")]})
        with pytest.raises(BadRequest, match="no such space"):
            volumes.set_volumes(session, platform, app, {"volumes": [space_volume(source="alice/nothing")]})
        with pytest.raises(BadRequest, match="revision 'v9' does not exist"):
            volumes.set_volumes(session, platform, app, {"volumes": [space_volume(revision="v9")]})
        volumes.request_storage(session, platform, app, "small")
        with pytest.raises(BadRequest, match="/data holds"):
            volumes.set_volumes(session, platform, app, {"volumes": [space_volume(mountPath="/data")]})
        # the source changes owner's hands: mounted again only if still allowed, checked at every start
        weights.owner_id = secret.owner_id
        weights.owner = secret.owner
        session.flush()
        with pytest.raises(BadRequest, match="private and not alice's"):
            volumes.instance_mounts(session, platform, app)


def test_a_folder_that_is_not_in_the_repo_is_refused_at_start(db_platform: Platform, tmp_path: Path) -> None:
    platform = db_platform
    with platform.tx() as session:
        app = make_space(session, platform, "alice", "app")
        weights = make_space(session, platform, "alice", "weights")
        push_files(platform, weights, {"README.md": "w\n", "link": "x"}, tmp_path)
        volumes.set_volumes(session, platform, app, {"volumes": [space_volume(path="nothing")]})
        with pytest.raises(SpaceportError, match="'nothing' is not a folder"):
            volumes.instance_mounts(session, platform, app)
        volumes.delete_volumes(session, platform, app)
        with pytest.raises(BadRequest, match="no volumes"):
            volumes.delete_volumes(session, platform, app)


# ---- Kubernetes: a PersistentVolumeClaim per space ---------------------------------------------------------

ART = ImageArtifact(image="registry.local:5000/spaces/alice-demo:0123456789ab", port=7860, health_path="/")
DATA = Mount(source="/unused/on/k8s", target="/data", read_only=False, claim="spaceport-data-0123456789abcdef0123",
             size_bytes=20 * 10**9)


@pytest.fixture(scope="module")
def site() -> SiteConfig:
    return SiteConfig(catalog=load_catalog(), poll_interval=0, storage_class="fast-ssd")


def spec(name: str = "alice-demo-b1", mounts: tuple[Mount, ...] = (DATA,)) -> InstanceSpec:
    return InstanceSpec(name=name, space_id="alice/demo", artifact=ART, mounts=mounts)


def test_the_claim_is_per_space_of_the_site_class_sized_by_tier(site: SiteConfig) -> None:
    claim, deployment, _service = objects.instance_objects(spec(), site)
    assert claim == {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "spaceport-data-0123456789abcdef0123", "namespace": "spaceport-alice",
                     "labels": {"app.kubernetes.io/managed-by": "spaceport", "app.kubernetes.io/part-of": "spaceport",
                                "spaceport.site": "spaceport", "spaceport.space": "alice.demo",
                                "spaceport.owner": "alice", "spaceport.storage": "persistent"},
                     "annotations": {"spaceport.space-id": "alice/demo"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-ssd",
                 "resources": {"requests": {"storage": "20000000000"}}},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "spaceport-data-0123456789abcdef0123"}} in pod["volumes"]
    assert {"name": "data", "mountPath": "/data"} in pod["containers"][0]["volumeMounts"]
    # the next instance (restart, push) binds the same claim, beside the old one on its node (ReadWriteOnce)
    later = objects.instance_objects(spec("alice-demo-b2"), site)
    assert later[0] == claim
    assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {"labelSelector": {"matchLabels": {"spaceport.space": "alice.demo"}}, "topologyKey": "kubernetes.io/hostname"}]
    for obj in (claim, deployment):
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_no_claim_without_storage_and_the_cluster_default_class(site: SiteConfig) -> None:
    assert [o["kind"] for o in objects.instance_objects(spec(mounts=()), site)] == ["Deployment", "Service"]
    claim = objects.instance_objects(spec(), replace(site, storage_class=None))[0]
    assert "storageClassName" not in claim["spec"]
    kubernetes_validate.validate(claim, "1.37.0", strict=True)


def test_repo_volumes_are_a_runtime_failure_on_kubernetes(site: SiteConfig) -> None:
    with pytest.raises(RuntimeFailure, match="not mounted on the Kubernetes runtime"):
        objects.instance_objects(spec(mounts=(DATA, Mount(source="/x", target="/models"))), site)
