"""HF-compatible space endpoints: list, info, runtime, lifecycle actions, build and run logs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from controller.api.deps import DB, Caller, PlatformDep, User
from controller.git import storage
from controller.services import lifecycle, spaces
from controller.services.views import runtime_json, space_json

router = APIRouter(prefix="/api/spaces", tags=["spaces"])


@router.get("")
def list_spaces(db: DB, caller: Caller, platform: PlatformDep, author: str | None = None,
                search: str | None = None, sdk: str | None = None, limit: int = Query(100, ge=1, le=1000),
                offset: int = Query(0, ge=0, le=2**31 - 1), full: bool = False) -> list[dict[str, Any]]:
    query = spaces.SpaceQuery(author=author, search=search, sdk=sdk, limit=limit, offset=offset)
    found = spaces.list_spaces(db, caller, query)
    sleeps: dict[str, int | None] = {}  # one settings lookup per flavor, not one query per space
    for s in found:
        if s.requested_hardware not in sleeps:
            sleeps[s.requested_hardware] = lifecycle.default_sleep(db, s)
    return [space_json(s, platform.settings, default_sleep=sleeps[s.requested_hardware]) for s in found]


@router.get("/{owner}/{name}")
def space_info(owner: str, name: str, db: DB, caller: Caller, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_space(db, caller, owner, name)
    repo = storage.repo_path(platform.settings.repos_dir, owner, name)
    files = storage.list_files(repo, space.head_sha) if space.head_sha else []
    return space_json(space, platform.settings, files=files, default_sleep=lifecycle.default_sleep(db, space))


@router.get("/{owner}/{name}/runtime")
def space_runtime(owner: str, name: str, db: DB, caller: Caller) -> dict[str, Any]:
    space = spaces.get_space(db, caller, owner, name)
    return runtime_json(space, default_sleep=lifecycle.default_sleep(db, space))


@router.post("/{owner}/{name}/pause")
def pause(owner: str, name: str, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    lifecycle.pause(db, platform, space)
    return runtime_json(space, default_sleep=lifecycle.default_sleep(db, space))


@router.post("/{owner}/{name}/restart")
def restart(owner: str, name: str, db: DB, user: User, platform: PlatformDep, factory: bool = False) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    lifecycle.restart(db, platform, space, factory=factory)
    return runtime_json(space, default_sleep=lifecycle.default_sleep(db, space))
