"""Hardware and sleep time: GET /api/spaces/hardware, POST .../hardware, POST .../sleeptime (HfApi shapes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import DB, PlatformDep, User
from controller.services import lifecycle, quotas, spaces
from controller.services.views import runtime_json

router = APIRouter(prefix="/api/spaces", tags=["hardware"])


class HardwareRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    flavor: str
    sleepTimeSeconds: int | None = None


class SleepTimeRequest(BaseModel):
    seconds: int = Field(description="Seconds of inactivity before the space sleeps; -1 = never")


@router.get("/hardware")
def list_hardware(platform: PlatformDep) -> list[dict[str, Any]]:
    return quotas.catalog(platform).to_hf_json()


@router.post("/{owner}/{name}/hardware")
def request_hardware(owner: str, name: str, body: HardwareRequest, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    """Switch flavor: refused with 403 (quota) or 409 (capacity) naming who holds the devices."""
    space = spaces.get_writable_space(db, user, owner, name)
    if body.sleepTimeSeconds is not None:
        lifecycle.set_sleep_time(space, body.sleepTimeSeconds)
    lifecycle.change_hardware(db, platform, space, body.flavor)
    return runtime_json(space, default_sleep=lifecycle.default_sleep(db, space))


@router.post("/{owner}/{name}/sleeptime")
def set_sleep_time(owner: str, name: str, body: SleepTimeRequest, db: DB, user: User) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    lifecycle.set_sleep_time(space, body.seconds)
    return runtime_json(space, default_sleep=lifecycle.default_sleep(db, space))
