"""HF-compatible repo and account endpoints: /api/repos/create, /api/repos/delete, /api/whoami-v2."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from controller.api.deps import DB, PlatformDep, User
from controller.domain.errors import BadRequest
from controller.services import accounts, lifecycle, spaces
from controller.services.lifecycle import delete_space

router = APIRouter(prefix="/api", tags=["repos"])


class CreateRepo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    organization: str | None = None
    type: str | None = "model"
    private: bool | None = None
    visibility: str | None = None
    sdk: str | None = None
    hardware: str | None = None
    sleepTimeSeconds: int | None = None


class DeleteRepo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    organization: str | None = None
    type: str | None = "model"


def _space_type(kind: str | None) -> None:
    if kind != "space":
        raise BadRequest(f"Spaceport hosts spaces only; repo type {kind!r} is not supported. Pass repo_type='space'.")


def _private(body: CreateRepo) -> bool:
    if body.visibility is not None:
        if body.visibility not in ("public", "private"):
            raise BadRequest("visibility must be 'public' or 'private'.")
        return body.visibility == "private"
    return bool(body.private)


@router.post("/repos/create")
def create_repo(body: CreateRepo, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    _space_type(body.type)
    owner = body.organization or user.user.name
    hardware = body.hardware or "cpu-basic"
    lifecycle.check_sleep_time(body.sleepTimeSeconds)  # before anything is created
    space = spaces.create_space(db, platform.settings.repos_dir, user, owner, body.name, sdk=body.sdk,
                                private=_private(body), hardware=hardware)
    if body.sleepTimeSeconds is not None:
        lifecycle.set_sleep_time(space, body.sleepTimeSeconds)
    base = platform.settings.public_url.rstrip("/")
    return {"url": f"{base}/spaces/{owner}/{body.name}", "name": f"{owner}/{body.name}", "id": f"sp{space.id}"}


@router.api_route("/repos/delete", methods=["DELETE", "POST"])
def delete_repo(body: DeleteRepo, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    _space_type(body.type)
    owner = body.organization or user.user.name
    space = spaces.get_writable_space(db, user, owner, body.name)
    delete_space(db, platform, space)
    return {}


@router.get("/whoami-v2")
def whoami(db: DB, user: User) -> dict[str, Any]:
    account = user.user
    orgs = accounts.orgs_of(db, account)
    return {
        "type": "user",
        "id": str(account.id),
        "name": account.name,
        "fullname": account.fullname or account.name,
        "email": account.email,
        "isPro": False,
        "canPay": False,
        "isAdmin": account.is_admin,
        "orgs": [{"type": "org", "name": o.name, "fullname": o.fullname or o.name, "roleInOrg": "write"} for o in orgs],
        "auth": {
            "type": "access_token",
            "accessToken": {"displayName": user.token_name or "session", "role": user.scope},
        },
    }
