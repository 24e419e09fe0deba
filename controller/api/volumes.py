"""Persistent storage and volumes of a space, as the Hub serves them (issue 16).

`POST /api/spaces/O/N/storage {"tier": "small"}` and `DELETE` (huggingface_hub's request_space_storage /
delete_space_storage, which answer the runtime), `PUT /api/spaces/O/N/volumes {"volumes": [...]}` and `DELETE`
(set_space_volumes / delete_space_volumes). Only who may change the space may call them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from controller.api.deps import DB, PlatformDep, User
from controller.services import lifecycle, spaces, volumes
from controller.services.views import runtime_json

router = APIRouter(prefix="/api/spaces", tags=["volumes"])


def _runtime(db: DB, space: Any) -> dict[str, Any]:
    return runtime_json(space, default_sleep=lifecycle.default_sleep(db, space))


@router.post("/{owner}/{name}/storage")
def request_storage(owner: str, name: str, db: DB, user: User, platform: PlatformDep,
                    body: Any = Body(default=None)) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    volumes.request_storage(db, platform, space, body.get("tier") if isinstance(body, dict) else None)
    return _runtime(db, space)


@router.delete("/{owner}/{name}/storage")
def delete_storage(owner: str, name: str, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    volumes.delete_storage(db, platform, space)
    return _runtime(db, space)


@router.put("/{owner}/{name}/volumes")
def set_volumes(owner: str, name: str, db: DB, user: User, platform: PlatformDep,
                body: Any = Body(default=None)) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    volumes.set_volumes(db, platform, space, body)
    return _runtime(db, space)


@router.delete("/{owner}/{name}/volumes")
def delete_volumes(owner: str, name: str, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    volumes.delete_volumes(db, platform, space)
    return _runtime(db, space)
