"""Duplicate (fork) a space: full git history, its Git LFS objects (by reference), variables; secrets must
be entered again.

Anyone who can read the source may duplicate it into a namespace they can write. The copy keeps its
lineage (`duplicated_from`), starts on cpu-basic unless a flavor is asked for, and builds at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from controller.db.models import Space
from controller.domain.errors import Conflict
from controller.domain.naming import split_repo_id
from controller.git import lfs, quota, storage
from controller.services import builds, quotas, settings_vars, spaces
from controller.services.accounts import Principal
from controller.services.platform import Platform
from controller.services.settings_vars import KeyValue

DEFAULT_FLAVOR = "cpu-basic"


@dataclass(frozen=True)
class DuplicateRequest:
    target: str  # "OWNER/NAME"
    private: bool | None = None  # None: same visibility as the source
    hardware: str | None = None
    sleep_time: int | None = None
    secrets: list[KeyValue] = field(default_factory=list)
    variables: list[KeyValue] = field(default_factory=list)


@dataclass(frozen=True)
class Duplicated:
    space: Space
    missing_secrets: list[str]


def duplicate(session: Session, platform: Platform, principal: Principal | None, source_owner: str,
              source_name: str, request: DuplicateRequest) -> Duplicated:
    source = spaces.get_space(session, principal, source_owner, source_name)
    owner, name = split_repo_id(request.target)
    spaces.check_namespace_writable(session, principal, owner)
    if spaces.find_space(session, owner, name) is not None:
        raise Conflict(f"You already created this space repo: {owner}/{name}.", url=_url(platform, owner, name))
    flavor = quotas.flavor(platform, request.hardware or DEFAULT_FLAVOR).name  # 400 lists valid flavors
    _validate_items(request)
    target = spaces.create_space(session, platform.settings.repos_dir, principal, owner, name, sdk=source.sdk,
                                 private=source.private if request.private is None else request.private,
                                 hardware=flavor)
    quotas.check_request(session, platform, target, flavor)  # 403 quota / 409 capacity, nothing kept
    target.duplicated_from = source.space_id
    target.sleep_time = request.sleep_time
    _copy_config(session, platform, source, target, request)
    _copy_code(session, platform, source, target)
    return Duplicated(target, missing_secrets(session, principal, target))


def _validate_items(request: DuplicateRequest) -> None:
    """Fail before creating anything when a given key or value is invalid."""
    for item in request.variables:
        settings_vars.validate_value(item.value, settings_vars.validate_key(item.key))
    for item in request.secrets:
        settings_vars.validate_value(item.value, settings_vars.validate_key(item.key, "secret"), "secret")


def _copy_config(session: Session, platform: Platform, source: Space, target: Space,
                 request: DuplicateRequest) -> None:
    """Variables copied then overridden by the given ones; only the given secrets are set."""
    for variable in settings_vars.list_variables(session, source):
        settings_vars.put_variable(session, target, KeyValue(variable.key, variable.value, variable.description))
    for item in request.variables:
        settings_vars.put_variable(session, target, item)
    for item in request.secrets:
        settings_vars.put_secret(session, platform, target, item)


def _copy_code(session: Session, platform: Platform, source: Space, target: Space) -> None:
    """Server-side copy with full history, then a build of the head like a push."""
    repos = platform.settings.repos_dir
    src = storage.repo_path(repos, source.owner.name, source.name)
    dest = storage.repo_path(repos, target.owner.name, target.name)
    storage.delete_repo(dest)  # create_space made an empty one
    pointers = lfs.all_pointers(src) if (src / "HEAD").exists() else []
    source_store, target_store = lfs.ObjectStore.of_repo(src), lfs.ObjectStore.of_repo(dest)
    linked = [p for p in pointers if source_store.has(p) and not target_store.has(p)]
    adding = quota.disk_usage(src) + sum(p.size for p in linked)
    quota.check(quota.StorageLimits.from_settings(platform.settings), dest, adding, "the duplicate")
    if storage.head_sha(src) is None:
        storage.init_bare(dest)
        return
    storage.copy_repo(src, dest)
    for pointer in linked:  # by reference: a hard link to the same immutable object
        target_store.link_from(source_store, pointer)
    head = storage.head_sha(dest)
    if head is not None:
        build = builds.record_push(session, target, dest, head)
        platform.queue_build(session, build.id)


def missing_secrets(session: Session, principal: Principal | None, space: Space) -> list[str]:
    """Secret keys the space it was duplicated from has and it still lacks (to be entered again).

    Only while `principal` may still read the source: a source that has since become private (or been
    given away) tells nothing about its secrets, not even their names."""
    if not space.duplicated_from or "/" not in space.duplicated_from:
        return []
    owner, name = space.duplicated_from.split("/", 1)
    source = spaces.find_space(session, owner, name)
    if source is None or not spaces.can_read(session, principal, source):
        return []
    return sorted(settings_vars.secret_keys(session, source) - settings_vars.secret_keys(session, space))


def _url(platform: Platform, owner: str, name: str) -> str:
    return f"{platform.settings.public_url.rstrip('/')}/spaces/{owner}/{name}"
