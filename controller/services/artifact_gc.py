"""Garbage collection of build artifacts (issue 19): exported sources, venvs and images nothing uses.

Kept, always: the artifacts of every space's current (target) build and of every instance the database
or the runtime still has (running or stopped; the local runtime's instance records are read from disk,
the docker runtime's containers are asked), and the sources of builds in progress.

Builds pick artifacts by content without telling anyone first (builder/venv.py reuses `venvs/<key>`
when its marker exists; builds.py reuses an exported `sources/OWNER/NAME/SHA`; an image build retags
`spaceport/SLUG:SHA12`), and only record the artifact when they finish. Every artifact belongs to one
owner (venv keys and uv caches are per owner, sources and image tags per space), so nothing of an owner
with a build running, or started within BUILD_MARGIN, is touched. Collection renames candidates into a
trash directory first, then looks again: a build of that owner that started meanwhile gets them back
(renamed in place); a build starting after the second look finds them gone and makes them again. Only
then is the trash deleted. Candidates found on disk are collected once older than the grace period.

With SPACEPORT_REGISTRY, an image is REGISTRY/SLUG:SHA12 (naming.image_ref): collecting it removes the
engine's local copy (docker runtime) and deletes its manifest in the registry through the registry's
HTTP API (`DELETE /v2/NAME/manifests/DIGEST`; needs `storage: delete: enabled: true`; reclaiming the
blobs is the registry's own `garbage-collect`). A manifest another kept tag of the same repository
points at (an identical rebuild) is left alone. Registries that need credentials are not supported here:
their manifests stay (logged).

Persistent storage left by no space, exports of volumes no space mounts, and on Kubernetes storage claims no
space's key names go with every full collection (controller.services.volumes.collect_storage).

Deleting a space (`release_space`) moves its exported sources away at once and collects its venvs right
away (grace 0) when no other space uses them; its images are remembered (PlatformSetting
"gc_pending_images") until its containers are gone and the next collection removes them. Its
instances' homes and logs go with the instances, removed by the reconciler as orphans.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from controller.config import Settings
from controller.db.models import Account, Build, Instance, PlatformSetting, Space, utcnow
from controller.domain.naming import in_registry, registry_host
from controller.runtimes.localstate import disk_usage, recorded_artifacts
from controller.services.platform import Platform

if TYPE_CHECKING:
    from controller.runtimes.docker import DockerRuntime

log = logging.getLogger(__name__)
ACTIVE = ("running",)
BUILD_MARGIN = timedelta(seconds=60)  # a build that started this recently may still be about to record
PENDING_IMAGES = "gc_pending_images"
TRASH = ".trash"
VENV_MARKER = ".spaceport-env.json"  # builder/venv.py MARKER: holds the owner


@dataclass(frozen=True)
class Candidate:
    kind: str  # "source" | "venv" | "image" | "storage" | "export" | "claim" (controller.services.volumes)
    ref: str  # a path, or an image reference
    owner: str


@dataclass
class Report:
    removed: list[Candidate] = field(default_factory=list)
    freed_bytes: int = 0
    kept: int = 0  # unused but protected (an owner's build in progress, within the grace period, in use)
    images_in_use: list[str] = field(default_factory=list)

    def summary(self, *, dry_run: bool = False) -> str:
        kinds = {k: sum(1 for c in self.removed if c.kind == k) for k in ("source", "venv", "image")}
        what = f"{kinds['source']} sources, {kinds['venv']} venvs, {kinds['image']} images"
        storage = sum(1 for c in self.removed if c.kind in ("storage", "export", "claim"))
        if storage:
            what += f", {storage} orphaned storage directories, exports or claims"
        if dry_run:
            return f"would remove {what}; {self.kept} unused kept for now"
        return f"freed {self.freed_bytes} bytes: {what} removed; {self.kept} unused kept for now"


@dataclass
class Keep:
    paths: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)

    def add_artifact(self, artifact: dict[str, object] | None) -> None:
        if not artifact:
            return
        for key in ("venv", "source"):
            if artifact.get(key):
                self.paths.add(_real(str(artifact[key])))
        if artifact.get("image"):
            self.images.add(str(artifact["image"]))


# ----------------------------------------------------------------------------- what is in use
def in_use(session: Session, settings: Settings, *, deleted: str = "") -> Keep:
    """Artifacts of current builds, of instances (database and runtime), and sources of builds in progress.
    `deleted`: a space just deleted, whose instances the reconciler is about to remove (they do not count)."""
    keep = Keep()
    targets = select(Space.target_build_id).where(Space.target_build_id.is_not(None))
    instances = select(Instance.build_id).where(Instance.state != "retired")
    for artifact in session.scalars(select(Build.artifact).where(or_(Build.id.in_(targets), Build.id.in_(instances)))):
        keep.add_artifact(artifact)
    active = select(Account.name, Space.name, Build.commit_sha).join(Space, Build.space_id == Space.id).join(
        Account, Space.owner_id == Account.id).where(Build.status.in_(("queued", "running")))
    for owner, name, sha in session.execute(active):
        keep.paths.add(_real(str(settings.artifacts_dir / "sources" / owner / name / sha)))
    _runtime_in_use(settings, keep, deleted)
    return keep


def _runtime_in_use(settings: Settings, keep: Keep, deleted: str) -> None:
    if settings.runtime == "local":
        for space_id, artifact in recorded_artifacts(settings.runtime_dir / "instances"):
            if space_id != deleted:
                keep.add_artifact(artifact)
    elif settings.runtime == "docker":
        from controller.runtimes.docker import DockerRuntime, site_id

        runtime = DockerRuntime(settings.docker_host or None, site=site_id(settings.data_dir))
        try:
            keep.images |= runtime.images_in_use()
        finally:
            runtime.close()


def busy_owners(session: Session) -> set[str]:
    """Owners with a build running or started within BUILD_MARGIN: their artifacts are left alone."""
    recent = utcnow() - BUILD_MARGIN
    stmt = select(Account.name).join(Space, Space.owner_id == Account.id).join(Build, Build.space_id == Space.id).where(
        or_(Build.status.in_(ACTIVE), Build.started_at >= recent))
    return set(session.scalars(stmt))


# ----------------------------------------------------------------------------- what could go
def disk_candidates(settings: Settings) -> list[Candidate]:
    """Every exported source (sources/OWNER/NAME/SHA) and venv (venvs/KEY) on disk, with its owner."""
    found: list[Candidate] = []
    sources = settings.artifacts_dir / "sources"
    for owner_dir in _dirs(sources):
        for space_dir in _dirs(owner_dir):
            found += [Candidate("source", str(p), owner_dir.name) for p in _dirs(space_dir)]
    for venv in _dirs(settings.artifacts_dir / "venvs"):
        found.append(Candidate("venv", str(venv), _venv_owner(venv)))
    return found


def recorded_images(session: Session) -> list[Candidate]:
    """Images recorded by builds (any build of any space) and images of deleted spaces still pending."""
    stmt = select(Account.name, Build.artifact).join(Space, Build.space_id == Space.id).join(
        Account, Space.owner_id == Account.id).where(Build.artifact.is_not(None))
    found = {Candidate("image", str(a["image"]), owner) for owner, a in session.execute(stmt)
             if isinstance(a, dict) and a.get("kind") == "image" and a.get("image")}
    found |= {Candidate("image", ref, owner) for ref, owner in _pending(session)}
    return sorted(found, key=lambda c: c.ref)


def _dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink() and p.name != TRASH)
    except OSError:
        return []


def _venv_owner(venv: Path) -> str:
    """The owner a venv was built for (its marker), "" when unknown (a half-made one: always protected
    while any build runs, see collect)."""
    try:
        return str(json.loads((venv / VENV_MARKER).read_text()).get("owner", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _real(path: str) -> str:
    return os.path.realpath(path)


def _age(path: str, now: float) -> float:
    try:
        return now - os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _pending(session: Session) -> list[tuple[str, str]]:
    row = session.get(PlatformSetting, PENDING_IMAGES)
    value = row.value if row is not None and isinstance(row.value, list) else []
    return [(str(ref), str(owner)) for ref, owner in value]


def remember_images(session: Session, images: Iterable[tuple[str, str]]) -> None:
    """Add (image, owner) pairs to collect once nothing uses them (called inside a space's deletion)."""
    merged = sorted(set(_pending(session)) | set(images))
    session.merge(PlatformSetting(key=PENDING_IMAGES, value=[list(p) for p in merged]))


# ----------------------------------------------------------------------------- collecting
def collect(platform: Platform, *, grace: float | None = None, dry_run: bool = False,
            only: list[Candidate] | None = None, deleted: str = "") -> Report:
    """Remove unused sources, venvs and images older than `grace` seconds (default SPACEPORT_GC_GRACE);
    `only`: just these candidates (of the space `deleted`). Logs what was freed."""
    settings = platform.settings
    grace = settings.gc_grace if grace is None else grace
    now = time.time()
    if only is None and not dry_run:
        empty_trash(settings)
    with platform.sessions() as session:
        keep, busy = in_use(session, settings, deleted=deleted), busy_owners(session)
        any_build = bool(busy)
        candidates = only if only is not None else [*disk_candidates(settings), *recorded_images(session)]
    report = Report()
    chosen: list[Candidate] = []
    for c in candidates:
        unused = c.ref not in keep.images if c.kind == "image" else _real(c.ref) not in keep.paths
        if not unused:
            continue
        old_enough = c.kind == "image" or _age(c.ref, now) >= grace
        protected = c.owner in busy or (c.owner == "" and any_build)
        if protected or not old_enough:
            report.kept += 1
        else:
            chosen.append(c)
    if dry_run:
        report.removed = chosen + (_storage(platform, grace, dry_run=True) if only is None else [])
        return report
    files = [c for c in chosen if c.kind != "image"]
    _remove_files(platform, settings, files, report)
    _remove_images(platform, settings, [c for c in chosen if c.kind == "image"], report, keep)
    if only is None:
        report.removed += _storage(platform, grace, dry_run=False)
    if report.removed or report.images_in_use:
        log.info("garbage collection: %s", report.summary())
    return report


def _storage(platform: Platform, grace: float, *, dry_run: bool) -> list[Candidate]:
    """Orphaned persistent storage, unused exports, Kubernetes claims of deleted storage (never an owner's
    in use: controller.services.volumes.collect_storage)."""
    from controller.services import volumes

    try:
        found = volumes.collect_storage(platform, grace=grace, dry_run=dry_run)
    except Exception:  # the claims of an unreachable cluster: the rest of the collection still counts
        log.exception("garbage collection of persistent storage failed; the next collection retries")
        return []
    return [Candidate(c.kind, c.ref, "") for c in found]


def _remove_files(platform: Platform, settings: Settings, chosen: list[Candidate], report: Report) -> None:
    """Rename into the trash, look again (restore an owner's that got busy meanwhile), then delete."""
    if not chosen:
        return
    trash = settings.artifacts_dir / TRASH / uuid.uuid4().hex[:12]
    trash.mkdir(parents=True)
    moved: list[tuple[Candidate, Path]] = []
    for index, c in enumerate(chosen):
        target = trash / f"{index}-{Path(c.ref).name}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(c.ref, target)
            moved.append((c, target))
    with platform.sessions() as session:
        busy = busy_owners(session)
    for c, target in moved:
        if c.owner in busy or (c.owner == "" and busy):
            os.rename(target, c.ref)  # a build of this owner started meanwhile: it may be using it
            report.kept += 1
            continue
        report.freed_bytes += disk_usage([target])
        report.removed.append(c)
        log.info("garbage collection: removed %s %s (owner %s)", c.kind, c.ref, c.owner or "unknown")
    shutil.rmtree(trash, ignore_errors=True)
    _prune_empty(settings.artifacts_dir / "sources")


def _prune_empty(sources: Path) -> None:
    """Remove emptied sources/OWNER/NAME and sources/OWNER directories."""
    for owner_dir in _dirs(sources):
        for space_dir in _dirs(owner_dir):
            with contextlib.suppress(OSError):
                space_dir.rmdir()
        with contextlib.suppress(OSError):
            owner_dir.rmdir()


def _remove_images(platform: Platform, settings: Settings, chosen: list[Candidate], report: Report,
                   keep: Keep) -> None:
    if not chosen or (settings.runtime != "docker" and not settings.registry):
        return
    still: list[tuple[str, str]] = []
    runtime = _docker_runtime(settings)
    try:
        for c in chosen:
            outcome = runtime.remove_image(c.ref) if runtime is not None else "missing"
            if outcome == "in use":
                report.images_in_use.append(c.ref)
                still.append((c.ref, c.owner))
                continue
            if in_registry(c.ref, settings.registry) and delete_from_registry(c.ref, keep.images) == "deleted":
                outcome = "removed"
            if outcome == "removed":
                report.removed.append(c)
                log.info("garbage collection: removed image %s (owner %s)", c.ref, c.owner)
    finally:
        if runtime is not None:
            runtime.close()
    with platform.tx() as session:
        pending = [p for p in _pending(session) if p in still or p[0] not in {c.ref for c in chosen}]
        session.merge(PlatformSetting(key=PENDING_IMAGES, value=[list(p) for p in pending]))


def _docker_runtime(settings: Settings) -> DockerRuntime | None:
    """The docker runtime (for the engine's local copies; the caller closes it), None on other runtimes."""
    if settings.runtime != "docker":
        return None
    from controller.runtimes.docker import DockerRuntime, site_id

    return DockerRuntime(settings.docker_host or None, site=site_id(settings.data_dir))


# ----------------------------------------------------------------------------- the registry's copy
MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json",
))


def delete_from_registry(ref: str, kept: set[str], timeout: float = 10.0) -> str:
    """Delete `ref`'s manifest in its registry: "deleted", "missing", "shared" (a kept tag of the same
    repository has the same digest) or "failed" (logged: unreachable, deletion disabled, credentials)."""
    repository, _, tag = ref.rpartition(":")
    name = repository.split("/", 1)[1]
    try:
        with httpx.Client(timeout=timeout, headers={"Accept": MANIFEST_TYPES}) as client:
            base = _registry_base(client, registry_host(ref))
            digest = _digest(client, f"{base}/v2/{name}/manifests/{tag}")
            if digest is None:
                return "missing"
            siblings = {k.rpartition(":")[2] for k in kept if k.rpartition(":")[0] == repository and k != ref}
            if any(_digest(client, f"{base}/v2/{name}/manifests/{t}") == digest for t in siblings):
                return "shared"
            answer = client.delete(f"{base}/v2/{name}/manifests/{digest}")
    except httpx.HTTPError as exc:
        log.warning("garbage collection: cannot reach the registry for %s: %s", ref, exc)
        return "failed"
    if answer.status_code in (200, 202):
        return "deleted"
    if answer.status_code == 404:
        return "missing"
    log.warning("garbage collection: the registry refused to delete %s (HTTP %s%s): %s", ref, answer.status_code,
                ", enable storage.delete in its config" if answer.status_code == 405 else "", answer.text[:200])
    return "failed"


def _registry_base(client: httpx.Client, host: str) -> str:
    """https://HOST, or http://HOST for a plain-HTTP registry (as Docker's insecure registries)."""
    if host.rsplit(":", 1)[0] in ("localhost", "[::1]") or host.startswith("127."):
        return f"http://{host}"  # loopback: plain HTTP, as Docker treats 127.0.0.0/8
    try:
        client.get(f"https://{host}/v2/")
    except httpx.ConnectError as exc:
        if "ssl" not in str(exc).lower():
            raise
        return f"http://{host}"
    return f"https://{host}"


def _digest(client: httpx.Client, url: str) -> str | None:
    answer = client.head(url)
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    return answer.headers.get("Docker-Content-Digest")


# ----------------------------------------------------------------------------- deleting a space
@dataclass(frozen=True)
class SpaceArtifacts:
    """What a space being deleted leaves behind (read before its rows go)."""

    owner: str
    name: str
    venvs: tuple[str, ...]
    images: tuple[str, ...]


def space_artifacts(session: Session, space: Space) -> SpaceArtifacts:
    venvs, images = set(), set()
    for artifact in session.scalars(select(Build.artifact).where(Build.space_id == space.id)):
        if isinstance(artifact, dict) and artifact.get("venv"):
            venvs.add(str(artifact["venv"]))
        if isinstance(artifact, dict) and artifact.get("image"):
            images.add(str(artifact["image"]))
    return SpaceArtifacts(space.owner.name, space.name, tuple(sorted(venvs)), tuple(sorted(images)))


def release_space(platform: Platform, gone: SpaceArtifacts) -> Report:
    """After a space's deletion committed (in a background thread): its exported sources go; its venvs and
    images too if no other space uses them (else a later collection removes them)."""
    settings = platform.settings
    sources = settings.artifacts_dir / "sources" / gone.owner / gone.name
    if sources.is_dir() and not sources.is_symlink():
        trash = settings.artifacts_dir / TRASH / f"space-{uuid.uuid4().hex[:12]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(sources, trash)
            log.info("deleted space %s/%s: removing its sources %s", gone.owner, gone.name, sources)
            shutil.rmtree(trash, ignore_errors=True)
    only = [Candidate("venv", v, gone.owner) for v in gone.venvs if os.path.isdir(v)]
    only += [Candidate("image", i, gone.owner) for i in gone.images]
    return collect(platform, grace=0, only=only, deleted=f"{gone.owner}/{gone.name}") if only else Report()


def empty_trash(settings: Settings) -> None:
    """Leftovers of collections a crash interrupted (the deletions in progress are younger than a minute)."""
    now = time.time()
    for leftover in _dirs(settings.artifacts_dir / TRASH):
        if _age(str(leftover), now) > 60:
            shutil.rmtree(leftover, ignore_errors=True)
