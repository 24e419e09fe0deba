"""Use cases the web UI needs that no other service offers as a function (the API has them inline).

Everything here goes through the session and the domain; nothing talks to a runtime directly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from controller.db.models import PlatformSetting, Space, Variable
from controller.domain.errors import BadRequest
from controller.git import storage
from controller.services import builds, lifecycle, quotas, settings_vars, spaces
from controller.services.accounts import Principal
from controller.services.platform import Platform


def change_hardware(session: Session, platform: Platform, space: Space, flavor: str) -> None:
    """Switch flavor (as POST /api/spaces/O/N/hardware): refused 403 quota / 409 capacity."""
    quotas.check_request(session, platform, space, flavor)
    if flavor == space.requested_hardware:
        return
    space.requested_hardware = flavor
    if space.target_build_id is not None and space.desired != "paused":
        space.desired = "running"
        lifecycle.bump_generation(space)
    platform.after_commit(session, platform.kick)


def set_sleep_time(space: Space, seconds: int | None) -> None:
    """None: platform default; -1: never sleep; else idle seconds before sleeping (60 or more)."""
    if seconds is not None and seconds != -1 and seconds < 60:
        raise BadRequest("Sleep time must be at least 60 seconds, or 'never'.")
    space.sleep_time = seconds


def get_setting(session: Session, key: str) -> Any:
    row = session.get(PlatformSetting, key)
    return row.value if row is not None else None


def put_setting(session: Session, key: str, value: Any) -> None:
    session.merge(PlatformSetting(key=key, value=value))
    session.flush()


def duplicate_space(session: Session, platform: Platform, principal: Principal, source: Space, owner: str,
                    name: str, *, private: bool, hardware: str = "cpu-basic") -> Space:
    """Fork source into owner/name: code with history and variables; secrets must be re-entered."""
    repos = platform.settings.repos_dir
    copy = spaces.create_space(session, repos, principal, owner, name, sdk=source.sdk, private=private,
                               hardware=hardware)
    copy.duplicated_from = source.space_id
    copy.card_data = dict(source.card_data or {})
    for var in settings_vars.list_variables(session, source):
        session.add(Variable(space_id=copy.id, key=var.key, value=var.value, description=var.description))
    if source.head_sha:
        src = storage.repo_path(repos, source.owner.name, source.name)
        dest = storage.repo_path(repos, owner, name)
        storage.git(src, "push", "-q", str(dest), "refs/heads/main:refs/heads/main")
        build = builds.record_push(session, copy, dest, source.head_sha)
        platform.queue_build(session, build.id)
    session.flush()
    return copy
