"""Spaces: create, find (respecting privacy), list, update, delete."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, joinedload

from controller.db.models import Account, Space, utcnow
from controller.domain.errors import BadRequest, Conflict, Forbidden, NotFound, RepoNotFound, Unauthorized
from controller.domain.naming import unique_slug, validate_name
from controller.domain.stages import Stage
from controller.git import storage
from controller.services.accounts import (
    Principal,
    get_account,
    may_read_namespace_private,
    may_write_namespace,
    orgs_of,
)
from controller.services.platform import Platform

SDKS = ("gradio", "streamlit", "docker", "static")


@dataclass(frozen=True)
class SpaceQuery:
    author: str | None = None
    search: str | None = None
    sdk: str | None = None
    running: bool | None = None
    limit: int = 100
    offset: int = 0


def _not_found(owner: str, name: str) -> RepoNotFound:
    return RepoNotFound(f"Space {owner}/{name} does not exist, or you may not see it.")


def can_read(session: Session, principal: Principal | None, space: Space) -> bool:
    return not space.private or may_read_namespace_private(session, principal, space.owner)


def can_write(session: Session, principal: Principal | None, space: Space) -> bool:
    return may_write_namespace(session, principal, space.owner)


def find_space(session: Session, owner: str, name: str) -> Space | None:
    stmt = (
        select(Space).join(Account, Space.owner_id == Account.id)
        .where(Account.name == owner, Space.name == name).options(joinedload(Space.owner))
    )
    return session.scalar(stmt)


def get_space(session: Session, principal: Principal | None, owner: str, name: str) -> Space:
    """The space if the principal may read it; a private space is a 404 to others (like HF)."""
    space = find_space(session, owner, name)
    if space is None or not can_read(session, principal, space):
        raise _not_found(owner, name)
    return space


def get_writable_space(session: Session, principal: Principal | None, owner: str, name: str) -> Space:
    space = get_space(session, principal, owner, name)
    if principal is None:
        raise Unauthorized("Pass a write token (Authorization: Bearer ...) to change a space.")
    if not can_write(session, principal, space):
        raise Forbidden(f"You may not change {owner}/{name}: it belongs to {owner}, and a write token is needed.")
    return space


def check_namespace_writable(session: Session, principal: Principal | None, owner: str) -> Account:
    if principal is None:
        raise Unauthorized("Pass a write token to create spaces.")
    account = get_account(session, owner)
    if account is None:
        raise NotFound(f"No user or organization named {owner!r}.")
    if not may_write_namespace(session, principal, account):
        raise Forbidden(f"You may not create spaces in {owner!r}: only its owner or its organization's members can, with a write token.")
    return account


def create_space(session: Session, repos_dir: Path, principal: Principal | None, owner: str, name: str, *,
                 sdk: str | None = None, private: bool = False, hardware: str = "cpu-basic",
                 exist_ok: bool = False) -> Space:
    validate_name(name, "space name")
    account = check_namespace_writable(session, principal, owner)
    if sdk is not None and sdk not in SDKS:
        raise BadRequest(f"Unknown sdk {sdk!r}. Choose one of: {', '.join(SDKS)}.")
    existing = find_space(session, owner, name)
    if existing is not None:
        if exist_ok:
            return existing
        raise Conflict(f"You already created this space repo: {owner}/{name}.", url=f"/spaces/{owner}/{name}")
    slug = _free_slug(session, owner, name)
    space = Space(owner_id=account.id, owner=account, name=name, slug=slug, sdk=sdk, private=private,
                  requested_hardware=hardware, stage=Stage.NO_APP_FILE.value, card_data={})
    session.add(space)
    session.flush()
    storage.init_bare(storage.repo_path(repos_dir, owner, name))
    return space


def _free_slug(session: Session, owner: str, name: str) -> str:
    plain = unique_slug(owner, name, taken=False)
    taken = session.scalar(select(Space.id).where(Space.slug == plain)) is not None
    return unique_slug(owner, name, taken=taken)


def list_spaces(session: Session, principal: Principal | None, query: SpaceQuery) -> list[Space]:
    stmt = select(Space).join(Account, Space.owner_id == Account.id).options(joinedload(Space.owner))
    stmt = stmt.where(_visible(session, principal))
    if query.author:
        stmt = stmt.where(Account.name == query.author)
    if query.search:
        pattern = f"%{query.search.lower()}%"
        stmt = stmt.where(or_(func.lower(Space.name).like(pattern), func.lower(Account.name).like(pattern)))
    if query.sdk:
        stmt = stmt.where(Space.sdk == query.sdk)
    if query.running is True:
        stmt = stmt.where(Space.stage.in_([Stage.RUNNING.value, Stage.RUNNING_BUILDING.value, Stage.RUNNING_APP_STARTING.value]))
    limit = max(1, min(query.limit, 1000))
    stmt = stmt.order_by(Space.updated_at.desc(), Space.id.desc()).offset(max(0, query.offset)).limit(limit)
    return list(session.scalars(stmt))


def _visible(session: Session, principal: Principal | None) -> ColumnElement[bool]:
    if principal is None or not principal.can_read_private:
        return Space.private.is_(False)
    if principal.user.is_admin:
        return Space.id.is_not(None)
    owners = [principal.user.id, *[o.id for o in orgs_of(session, principal.user)]]
    return or_(Space.private.is_(False), Space.owner_id.in_(owners))


def set_private(space: Space, private: bool) -> None:
    space.private = private
    space.updated_at = utcnow()


def touch(space: Space) -> None:
    space.updated_at = utcnow()


def check_code_push(platform: Platform, principal: Principal) -> None:
    """New code runs on this host: refuse non-admins when apps would run unsandboxed (see factory)."""
    if platform.untrusted_push_refusal and not principal.user.is_admin:
        raise Forbidden(platform.untrusted_push_refusal)
