"""The idle sweep (Celery beat): apply the sleep policy to running spaces and kick the reconciler."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import PlatformSetting, Space, utcnow
from controller.domain.sleep import IdleSpace, SleepAction, SleepPolicy, decide
from controller.services import quotas
from controller.services.lifecycle import default_sleep
from controller.services.platform import Platform


def policy(session: Session, platform: Platform) -> SleepPolicy:
    """The admin's policy: settings file/env, overridden by values set in the admin UI/API."""
    s = platform.settings
    row = session.get(PlatformSetting, "sleep_policy")
    overrides = row.value if row is not None and isinstance(row.value, dict) else {}
    return SleepPolicy(
        light_enabled=bool(overrides.get("light_enabled", s.light_sleep_enabled)),
        deep_enabled=bool(overrides.get("deep_enabled", s.deep_sleep_enabled)),
        deep_after=timedelta(seconds=float(overrides.get("deep_after", s.deep_sleep_after))),
    )


def idle_view(session: Session, space: Space, accelerated: bool) -> IdleSpace:
    sleep_time = space.sleep_time if space.sleep_time is not None else default_sleep(session, space)
    last = space.last_activity_at or space.updated_at
    return IdleSpace(desired=space.desired, sleep_time=sleep_time, last_activity=last, accelerated=accelerated)


def sweep(platform: Platform, now: datetime | None = None, accelerated: set[str] | None = None) -> int:
    """Mark idle spaces frozen or sleeping; return how many changed. The reconciler does the work."""
    now = now or utcnow()
    changed = 0
    with platform.tx() as session:
        pol = policy(session, platform)
        flavors = accelerated if accelerated is not None else _accelerated_flavors(platform)
        for space in session.scalars(select(Space).where(Space.desired.in_(("running", "frozen")))):
            action = decide(idle_view(session, space, space.requested_hardware in flavors), now, pol)
            if action is SleepAction.FREEZE:
                space.desired = "frozen"
            elif action is SleepAction.DEEP:
                space.desired = "sleeping"
            else:
                continue
            changed += 1
        if changed:
            platform.after_commit(session, platform.kick)
    return changed


def _accelerated_flavors(platform: Platform) -> set[str]:
    catalog = quotas.catalog(platform)
    return {f.name for f in catalog.flavors.values() if f.accelerator}
