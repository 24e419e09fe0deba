"""Owner and admin actions on a space's lifecycle. They change desired state and kick the reconciler."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import AcceleratorDevice, PlatformSetting, Space
from controller.domain.errors import BadRequest
from controller.domain.stages import SERVING, Stage
from controller.git import storage
from controller.services import artifact_gc, builds, quotas, volumes
from controller.services.platform import Platform

log = logging.getLogger(__name__)
DEFAULT_SLEEP = {"cpu-basic": 48 * 3600}


def default_sleep(session: Session, space: Space) -> int | None:
    """Platform default sleep time for the space's flavor (admin-set; cpu-basic 48 h out of the box)."""
    row = session.get(PlatformSetting, "sleep_defaults")
    defaults = row.value if row is not None and isinstance(row.value, dict) else DEFAULT_SLEEP
    value = defaults.get(space.requested_hardware, defaults.get("*"))
    return int(value) if isinstance(value, int | float) and value > 0 else None


def pause(session: Session, platform: Platform, space: Space) -> None:
    """The space shows PAUSED at once; its accelerators stay its own until the reconciler has stopped its
    instance (`_stop_all` releases them then), so no other space is given a device its processes still use."""
    space.desired = "paused"
    space.stage = Stage.PAUSED.value
    platform.after_commit(session, platform.kick)


def restart(session: Session, platform: Platform, space: Space, *, factory: bool = False) -> None:
    """Restart on the current artifact, or (factory) rebuild the head without cache."""
    space.desired = "running"
    space.error_message = None
    if factory or space.target_build_id is None:
        build = builds.rebuild(session, space, no_cache=factory)
        if build is not None:
            platform.queue_build(session, build.id)
        return
    bump_generation(space)
    platform.after_commit(session, platform.kick)


def bump_generation(space: Space) -> None:
    """A new instance (same artifact, fresh config) replaces the current one once healthy."""
    space.generation += 1
    space.stage = (Stage.RUNNING_APP_STARTING if Stage(space.stage) in SERVING else Stage.APP_STARTING).value


def delete_space(session: Session, platform: Platform, space: Space) -> None:
    """Delete the space: its builds stop, its instances (homes, logs) are removed by the reconciler, its
    repo and exported sources go, and its venvs and images once no other space uses them (issue 19).
    Refused while it has persistent storage (controller.services.volumes.check_deletable)."""
    volumes.check_deletable(platform, space)
    builds.cancel_active(session, space)
    release_accelerators(session, space)
    repo = storage.repo_path(platform.settings.repos_dir, space.owner.name, space.name)
    gone = artifact_gc.space_artifacts(session, space)
    artifact_gc.remember_images(session, [(image, gone.owner) for image in gone.images])
    session.delete(space)
    session.flush()
    platform.after_commit(session, lambda: storage.delete_repo(repo))
    platform.after_commit(session, lambda: threading.Thread(target=_release_artifacts, args=(platform, gone),
                                                            name="release-artifacts", daemon=True).start())
    platform.after_commit(session, platform.kick)


def _release_artifacts(platform: Platform, gone: artifact_gc.SpaceArtifacts) -> None:
    """Best effort: what is left (an image its container still uses) goes with a later collection."""
    try:
        artifact_gc.release_space(platform, gone)
    except Exception:
        log.exception("releasing the artifacts of deleted space %s/%s failed; `spaceport gc` collects them",
                      gone.owner, gone.name)


def release_accelerators(session: Session, space: Space) -> None:
    for device in session.scalars(select(AcceleratorDevice).where(AcceleratorDevice.space_id == space.id)):
        device.space_id = None
        device.allocated_at = None


def change_hardware(session: Session, platform: Platform, space: Space, flavor: str) -> None:
    """Switch flavor (as POST /api/spaces/O/N/hardware): refused 403 quota / 409 capacity."""
    quotas.check_request(session, platform, space, flavor)
    if flavor == space.requested_hardware:
        return
    space.requested_hardware = flavor
    if space.target_build_id is not None and space.desired != "paused":
        space.desired = "running"
        bump_generation(space)
    platform.after_commit(session, platform.kick)


def check_sleep_time(seconds: int | None) -> None:
    """The one rule for every way a sleep time is set (create, duplicate, the sleep-time API)."""
    if seconds is not None and seconds != -1 and seconds < 60:
        raise BadRequest("The sleep time must be -1 (never sleep) or at least 60 seconds.")


def set_sleep_time(space: Space, seconds: int | None) -> None:
    """None: platform default; -1: never sleep; else idle seconds before sleeping (60 or more)."""
    check_sleep_time(seconds)
    space.sleep_time = seconds
