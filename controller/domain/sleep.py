"""Idle policy: when a running space freezes (light sleep) or stops (deep sleep). Pure; time injected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class SleepAction(StrEnum):
    STAY = "stay"
    FREEZE = "freeze"  # light sleep: processes frozen, memory kept, wakes in milliseconds
    DEEP = "deep"  # deep sleep: instance stopped, memory and accelerators released


@dataclass(frozen=True)
class SleepPolicy:
    light_enabled: bool = True
    deep_enabled: bool = True
    deep_after: timedelta = timedelta(hours=1)  # extra idle time after light sleep before deep sleep


@dataclass(frozen=True)
class IdleSpace:
    desired: str  # "running" | "frozen" | ...
    sleep_time: int | None  # seconds; None = never sleeps
    last_activity: datetime
    accelerated: bool


def decide(space: IdleSpace, now: datetime, policy: SleepPolicy) -> SleepAction:
    """What the sweep should do with this space now."""
    if space.sleep_time is None or space.sleep_time < 0 or space.desired not in ("running", "frozen"):
        return SleepAction.STAY
    idle = now - space.last_activity
    limit = timedelta(seconds=space.sleep_time)
    if idle < limit:
        return SleepAction.STAY
    if space.desired == "frozen":
        return SleepAction.DEEP if policy.deep_enabled and idle >= limit + policy.deep_after else SleepAction.STAY
    if space.accelerated or not policy.light_enabled:
        # accelerators are scarce: give them back at once
        return SleepAction.DEEP if policy.deep_enabled else SleepAction.STAY
    return SleepAction.FREEZE
