"""Admin API: quotas, accelerator inventory (who holds what), platform sleep defaults."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from controller.api.deps import DB, PlatformDep, User
from controller.db.models import PlatformSetting
from controller.services import quotas
from controller.services.accounts import require_admin

router = APIRouter(prefix="/api/admin", tags=["admin"])


class QuotaBody(BaseModel):
    owner: str
    accelerator: str
    limit: int


class DevicesBody(BaseModel):
    accelerator: str
    count: int = 1
    node: str = "local"


class SleepDefaults(BaseModel):
    sleep_defaults: dict[str, int] | None = None
    light_enabled: bool | None = None
    deep_enabled: bool | None = None
    deep_after: int | None = None


@router.get("/quotas")
def get_quotas(db: DB, user: User) -> list[dict[str, Any]]:
    require_admin(user)
    return [asdict(q) for q in quotas.list_quotas(db)]


@router.post("/quotas")
def set_quota(body: QuotaBody, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    require_admin(user, write=True)
    row = quotas.set_quota(db, platform, body.owner, body.accelerator, body.limit)
    return {"owner": body.owner, "accelerator": row.accelerator, "limit": row.limit}


@router.get("/accelerators")
def get_accelerators(db: DB, user: User) -> dict[str, Any]:
    require_admin(user)
    return {
        "inventory": quotas.inventory(db),
        "devices": [asdict(d) for d in quotas.device_rows(db)],
        "usage": [asdict(q) for q in quotas.list_quotas(db)],
    }


@router.post("/accelerators")
def add_accelerators(body: DevicesBody, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    require_admin(user, write=True)
    ids = quotas.add_devices(db, platform, body.accelerator, body.count, body.node)
    return {"accelerator": body.accelerator, "added": ids}


@router.post("/sleep")
def set_sleep_defaults(body: SleepDefaults, db: DB, user: User) -> dict[str, Any]:
    require_admin(user, write=True)
    if body.sleep_defaults is not None:
        db.merge(PlatformSetting(key="sleep_defaults", value=body.sleep_defaults))
    policy = {k: v for k, v in body.model_dump().items() if k != "sleep_defaults" and v is not None}
    if policy:
        row = db.get(PlatformSetting, "sleep_policy")
        current = dict(row.value) if row is not None and isinstance(row.value, dict) else {}
        db.merge(PlatformSetting(key="sleep_policy", value={**current, **policy}))
    return {"ok": True}
