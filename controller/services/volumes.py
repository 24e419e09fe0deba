"""Persistent storage (/data) and read-only volumes of a space (issue 16), over a session.

* Storage lives on the host in DATA_DIR/volumes/storage/KEY (KEY random per request, kept on the space):
  every instance of the space binds it read-write at /data, so it survives restarts, rebuilds, sleep and
  controller restarts. On Kubernetes KEY names the space's PersistentVolumeClaim instead. Its tier's size is
  enforced by the per-space disk watch (controller.services.diskquota), which measures the directory; a PVC
  is sized by its tier.
* Deleting storage is explicit (`delete_space_storage`): the data goes. Deleting a space that has storage is
  refused until its storage was deleted, so nobody loses /data by deleting the repo (the rule of both the API
  and the web UI). A duplicate never gets the source's storage or its data (as on the hosted platform).
* Volumes of type `space` mount another space's files at a revision, exported from git once per commit into
  DATA_DIR/volumes/exports, read-only. Only a public space or one of the same owner can be mounted, checked
  when the volumes are set and again at every start.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Settings
from controller.db.models import Instance, Space
from controller.domain import volumes as vol
from controller.domain.errors import BadRequest, Conflict, NotImplementedHere
from controller.git import storage
from controller.runtimes.base import Mount
from controller.services import lifecycle
from controller.services.platform import Platform
from controller.services.spaces import find_space

log = logging.getLogger(__name__)
_KEY = re.compile(r"^[0-9a-f]{32}$")


def tier_sizes(settings: Settings) -> dict[str, int]:
    return {"small": settings.storage_small_bytes, "medium": settings.storage_medium_bytes,
            "large": settings.storage_large_bytes}


def storage_dir(settings: Settings, key: str) -> Path:
    if not _KEY.match(key):
        raise ValueError(f"not a storage key: {key!r}")
    return settings.volumes_dir / "storage" / key


def claim_name(key: str) -> str:
    return f"spaceport-data-{key[:20]}"


def _restart(session: Session, platform: Platform, space: Space) -> None:
    """A new instance with the new mounts replaces the running one (as a hardware change does)."""
    if space.target_build_id is not None and space.desired != "paused":
        space.desired = "running"
        lifecycle.bump_generation(space)
    platform.after_commit(session, platform.kick)


def request_storage(session: Session, platform: Platform, space: Space, tier: object) -> None:
    sizes = tier_sizes(platform.settings)
    wanted = vol.parse_tier(tier, sizes)
    vol.check_tier_change(space.storage_tier, wanted, sizes)
    vol.check_storage_path(vol.volumes_from_json(space.volumes), True)
    if space.storage_tier == wanted:
        return
    space.storage_tier = wanted
    space.storage_key = space.storage_key or secrets.token_hex(16)
    _restart(session, platform, space)


def delete_storage(session: Session, platform: Platform, space: Space) -> None:
    """Delete the space's persistent storage and everything in it (the explicit way to lose /data)."""
    if space.storage_tier is None:
        raise BadRequest(f"{space.space_id} has no persistent storage to delete.")
    key = space.storage_key
    space.storage_tier = space.storage_key = None
    _restart(session, platform, space)
    if key:
        path = storage_dir(platform.settings, key)
        platform.after_commit(session, lambda: shutil.rmtree(path, ignore_errors=True))


def check_deletable(platform: Platform, space: Space) -> None:
    """A space with persistent storage is deleted only after its storage was (the confirmation)."""
    if space.storage_tier is not None:
        what = vol.describe_storage(space.storage_tier, tier_sizes(platform.settings))
        raise Conflict(f"{space.space_id} has {what}, which deleting the space would destroy. Delete the storage "
                       f"first (HfApi.delete_space_storage, or DELETE /api/spaces/{space.space_id}/storage), "
                       "then delete the space.")


def set_volumes(session: Session, platform: Platform, space: Space, body: object) -> None:
    volumes = vol.parse_volumes(body)
    vol.check_storage_path(volumes, space.storage_tier is not None)
    if volumes and platform.settings.runtime == "kubernetes":
        raise NotImplementedHere("Volumes of type 'space' are not mounted on the Kubernetes runtime; persistent "
                                 "storage (request_space_storage) is.")
    for volume in volumes:
        _source(session, space, volume)
        _resolve(platform.settings, volume)
    space.volumes = [v.to_json() for v in volumes]
    _restart(session, platform, space)


def delete_volumes(session: Session, platform: Platform, space: Space) -> None:
    if not space.volumes:
        raise BadRequest(f"{space.space_id} has no volumes to delete.")
    space.volumes = None
    _restart(session, platform, space)


def _source(session: Session, space: Space, volume: vol.VolumeSpec) -> Space:
    """The space a volume mounts: it exists and is public or the mounting space's owner's own."""
    owner, _, name = volume.source.partition("/")
    source = find_space(session, owner, name)
    if source is None or (source.private and source.owner_id != space.owner_id):
        raise BadRequest(f"Volume {volume.source}: no such space, or it is private and not {space.owner.name}'s; "
                         "a volume can mount a public space or one of the same owner.")
    return source


def _resolve(settings: Settings, volume: vol.VolumeSpec) -> str:
    owner, _, name = volume.source.partition("/")
    repo = storage.repo_path(settings.repos_dir, owner, name)
    sha = storage.git(repo, "rev-parse", "--verify", "-q", f"{volume.revision}^{{commit}}", check=False).strip()
    if not sha:
        raise BadRequest(f"Volume {volume.source}: revision {volume.revision!r} does not exist in that space.")
    return sha


def _export(settings: Settings, volume: vol.VolumeSpec, sha: str) -> Path:
    owner, _, name = volume.source.partition("/")
    dest = settings.volumes_dir / "exports" / owner / name / sha
    if not dest.exists():
        tmp = dest.with_name(f".{sha}.{secrets.token_hex(4)}.tmp")
        storage.export_tree(storage.repo_path(settings.repos_dir, owner, name), sha, tmp)
        tmp.rename(dest)
    target = dest / volume.path if volume.path else dest
    if not target.is_dir() or target.is_symlink():
        raise BadRequest(f"Volume {volume.source}: {volume.path!r} is not a folder of that space at {volume.revision}.")
    return target


def instance_mounts(session: Session, platform: Platform, space: Space) -> tuple[Mount, ...]:
    """What the space's next instance mounts: its storage at /data, then its volumes (checked again)."""
    settings = platform.settings
    mounts: list[Mount] = []
    if space.storage_tier is not None and space.storage_key:
        path = storage_dir(settings, space.storage_key)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mounts.append(Mount(source=str(path), target=vol.STORAGE_PATH, read_only=False,
                            claim=claim_name(space.storage_key),
                            size_bytes=tier_sizes(settings).get(space.storage_tier, 0)))
    for volume in vol.volumes_from_json(space.volumes):
        _source(session, space, volume)
        mounts.append(Mount(source=str(_export(settings, volume, _resolve(settings, volume))),
                            target=volume.mount_path))
    return tuple(mounts)


@dataclass(frozen=True)
class StorageLimit:
    path: Path
    limit: int
    tier: str


def storage_limits(platform: Platform, names: list[str]) -> dict[str, StorageLimit]:
    """Instance name -> its space's storage directory and tier size, for the disk watch."""
    if not names:
        return {}
    sizes = tier_sizes(platform.settings)
    with platform.sessions() as session:
        rows = session.execute(select(Instance.name, Space.storage_tier, Space.storage_key)
                               .join(Space, Instance.space_id == Space.id)
                               .where(Instance.name.in_(names), Space.storage_key.is_not(None)))
        return {name: StorageLimit(storage_dir(platform.settings, key), sizes.get(tier, 0), tier)
                for name, tier, key in rows if tier and key}
