"""Persistent storage (/data) and read-only volumes of a space (issue 16), over a session.

* Storage lives on the host in DATA_DIR/volumes/storage/KEY (KEY random per request, kept on the space):
  every instance of the space binds it read-write at /data, so it survives restarts, rebuilds, sleep and
  controller restarts. On Kubernetes KEY names the space's PersistentVolumeClaim instead. Its tier's size is
  enforced by the per-space disk watch (controller.services.diskquota), which measures the directory; a PVC
  is sized by its tier.
* Deleting storage is explicit (`delete_space_storage`): the data goes. Deleting a space that has storage is
  refused until its storage was deleted, so nobody loses /data by deleting the repo (the rule of both the API
  and the web UI): that second, explicit call is the confirmation. A duplicate never gets the source's storage
  or its data (as on the hosted platform).
* Collection (`collect_storage`, part of artifact GC): a storage directory whose key no space holds (its
  deletion was interrupted, or a start raced with it), an export no space's volumes name, and on Kubernetes a
  claim of this site no space's key names, are removed; directories once older than the grace period (an
  export's age counts from its last mount). Directories are renamed out first and deleted without following
  any link an app left in them.
* Volumes of type `space` mount another space's files at a revision, exported from git once per commit into
  DATA_DIR/volumes/exports, read-only. Only a public space or one of the same owner can be mounted, checked
  when the volumes are set and again at every start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Callable
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
        platform.after_commit(session, lambda: _discard_quietly(platform.settings, path))
        if platform.settings.runtime == "kubernetes":
            platform.after_commit(session, lambda: _in_background(platform, "delete-claims", prune_claims))


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
    with contextlib.suppress(OSError):
        os.utime(dest)  # its age for collection counts from its last mount
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


# ----------------------------------------------------------------------------- collection
TRASH = ".trash"
ClaimPruner = Callable[[set[str], bool], list[str]]  # (claims to keep, dry_run) -> NAMESPACE/NAME


@dataclass(frozen=True)
class Collected:
    kind: str  # "storage" | "export" | "claim"
    ref: str  # a path, or NAMESPACE/NAME of a claim


def _discard(settings: Settings, path: Path) -> bool:
    """Rename `path` into the volumes' trash (so nothing starts with it meanwhile), then delete it; links
    in it are removed, never followed (shutil.rmtree). False if it was already gone."""
    trash = settings.volumes_dir / TRASH
    trash.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = trash / f"{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return False
    shutil.rmtree(target, ignore_errors=True)
    return True


def _discard_quietly(settings: Settings, path: Path) -> None:
    try:
        _discard(settings, path)
    except OSError as exc:  # it stays an orphan: the next garbage collection removes it
        log.warning("deleting the persistent storage %s failed: %s", path, exc)


def _dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []


def _old(path: Path, now: float, grace: float) -> bool:
    try:
        return now - path.lstat().st_mtime >= grace
    except FileNotFoundError:
        return False


def _kept(platform: Platform) -> tuple[set[str], set[str]]:
    """Storage keys any space holds, and the spaces (OWNER/NAME) any space's volumes mount."""
    with platform.sessions() as session:
        rows = session.execute(select(Space.storage_key, Space.volumes))
        keys, sources = set(), set()
        for key, volumes in rows:
            if key:
                keys.add(str(key))
            sources |= {v.source for v in vol.volumes_from_json(volumes)}
        return keys, sources


def storage_candidates(platform: Platform, grace: float) -> list[Collected]:
    """What collection would remove (listed before the database is read: a key is committed before its
    directory is made, so a directory listed here whose key is not found is no space's)."""
    settings, now = platform.settings, time.time()
    stored = [p for p in _dirs(settings.volumes_dir / "storage") if _KEY.match(p.name)]
    exports = [sha for owner in _dirs(settings.volumes_dir / "exports") for name in _dirs(owner) for sha in _dirs(name)]
    keys, sources = _kept(platform)
    found = [Collected("storage", str(p)) for p in stored if p.name not in keys and _old(p, now, grace)]
    found += [Collected("export", str(p)) for p in exports
              if f"{p.parent.parent.name}/{p.parent.name}" not in sources and _old(p, now, grace)]
    return found


def collect_storage(platform: Platform, *, grace: float | None = None, dry_run: bool = False,
                    claims: ClaimPruner | None = None) -> list[Collected]:
    """Remove orphaned storage directories and unused exports older than `grace` (default GC_GRACE), and on
    Kubernetes (or with `claims`, a claim pruner) this site's storage claims no space's key names."""
    settings = platform.settings
    grace = settings.gc_grace if grace is None else grace
    chosen = storage_candidates(platform, grace)
    if dry_run:
        return chosen + _claims(platform, claims, dry_run=True)
    now = time.time()
    for leftover in _dirs(settings.volumes_dir / TRASH):  # a deletion a crash interrupted after its rename
        if _old(leftover, now, 60):
            shutil.rmtree(leftover, ignore_errors=True)
    removed = [c for c in chosen if _discard(settings, Path(c.ref))]
    for c in removed:
        log.info("garbage collection: removed %s %s", c.kind, c.ref)
    for owner in _dirs(settings.volumes_dir / "exports"):
        for name in [*_dirs(owner), owner]:
            with contextlib.suppress(OSError):
                name.rmdir()
    return removed + _claims(platform, claims, dry_run=False)


def _claims(platform: Platform, claims: ClaimPruner | None, *, dry_run: bool) -> list[Collected]:
    if claims is None and platform.settings.runtime != "kubernetes":
        return []
    return [Collected("claim", ref) for ref in prune_claims(platform, claims, dry_run=dry_run)]


def kept_claims(platform: Platform) -> set[str]:
    """The claim names of every storage key a space holds."""
    return {claim_name(key) for key in _kept(platform)[0]}


def prune_claims(platform: Platform, pruner: ClaimPruner | None = None, *, dry_run: bool = False) -> list[str]:
    """Delete this site's storage claims that no space's key names (Kubernetes); NAMESPACE/NAME deleted
    (with `dry_run`, those that would be, none deleted). Without `pruner`, the configured runtime's (only
    Kubernetes has one)."""
    if pruner is not None:
        return pruner(kept_claims(platform), dry_run)
    from controller.runtimes.factory import make_runtime

    runtime = make_runtime(platform.settings)
    prune = getattr(runtime, "prune_claims_sync", None)
    return prune(kept_claims(platform), dry_run=dry_run) if prune is not None else []


def _in_background(platform: Platform, name: str, work: Callable[[Platform], object]) -> None:
    import threading

    def run() -> None:
        try:
            work(platform)
        except Exception:
            log.exception("%s failed; the next garbage collection retries", name)

    threading.Thread(target=run, name=name, daemon=True).start()
