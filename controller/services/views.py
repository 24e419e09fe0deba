"""JSON views of spaces in the Hugging Face Hub shapes (space_info, runtime)."""

from __future__ import annotations

from typing import Any

from controller.config import Settings
from controller.db.models import Space
from controller.domain.stages import Stage


def app_host(settings: Settings, space: Space) -> str:
    """Host-based URL of the app, like https://OWNER-NAME.hf.space."""
    base = settings.public_url or "http://localhost:8000"
    scheme, _, rest = base.partition("://")
    port = ""
    hostport = rest.split("/")[0]
    if ":" in hostport:
        port = ":" + hostport.split(":")[1]
    domain = settings.apps_domain or "localhost"
    return f"{scheme}://{space.slug}.{domain}{port}"


def sleep_seconds(space: Space, default: int | None) -> int | None:
    if space.sleep_time is not None:
        return None if space.sleep_time < 0 else space.sleep_time
    return default


def runtime_json(space: Space, *, default_sleep: int | None = None) -> dict[str, Any]:
    stage = space.stage
    return {
        "stage": stage,
        "hardware": {"current": space.current_hardware if stage in _HOLDING else None,
                     "requested": space.requested_hardware},
        "gcTimeout": sleep_seconds(space, default_sleep),
        "errorMessage": space.error_message if stage in _ERRORISH or space.error_message else None,
        "storage": space.storage_tier,  # persistent /data (controller.services.volumes)
        "volumes": space.volumes or None,
        "replicas": {"requested": 1, "current": 1 if stage in _HOLDING else 0},
        "devMode": False,
        "domains": [{"domain": space.slug, "stage": "READY"}],
        "sha": space.head_sha,
    }


_HOLDING = {Stage.RUNNING, Stage.RUNNING_BUILDING, Stage.RUNNING_APP_STARTING, Stage.APP_STARTING}
_ERRORISH = {Stage.BUILD_ERROR, Stage.RUNTIME_ERROR, Stage.CONFIG_ERROR, Stage.NO_APP_FILE}


def space_json(space: Space, settings: Settings, *, files: list[str] | None = None,
               default_sleep: int | None = None) -> dict[str, Any]:
    card = space.card_data or {}
    tags = [t for t in card.get("tags", []) if isinstance(t, str)] if isinstance(card.get("tags"), list) else []
    info: dict[str, Any] = {
        "_id": f"sp{space.id:022d}",
        "id": f"{space.owner.name}/{space.name}",
        "author": space.owner.name,
        "sha": space.head_sha,
        "lastModified": space.updated_at.isoformat().replace("+00:00", "Z"),
        "createdAt": space.created_at.isoformat().replace("+00:00", "Z"),
        "private": space.private,
        "gated": False,
        "disabled": False,
        "likes": 0,
        "sdk": space.sdk,
        "tags": [*( [space.sdk] if space.sdk else []), *tags],
        "cardData": card,
        "subdomain": space.slug,
        "host": app_host(settings, space),
        "runtime": runtime_json(space, default_sleep=default_sleep),
        "duplicatedFrom": space.duplicated_from,
    }
    if files is not None:
        info["siblings"] = [{"rfilename": f} for f in files]
    return info
