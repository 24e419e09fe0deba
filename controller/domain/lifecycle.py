"""Derive a space's stage from desired state, its head build and its instances. Pure and level-based."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from controller.domain.stages import Stage

MAX_RESTARTS = 3


@dataclass(frozen=True)
class Observed:
    """What the reconciler knows about one space at one moment."""

    desired: str  # running | frozen | sleeping | paused
    has_head: bool
    build_status: str | None  # status of the head commit's build, None if none
    build_error_stage: str | None
    build_error: str | None
    serving: bool  # an instance is ready and routed (may be an older build)
    wanted_state: str | None  # state of the wanted instance row: starting|ready|frozen|stopped|failed|None
    wanted_message: str | None


def derive_stage(o: Observed) -> tuple[Stage, str | None]:
    """(stage, error message) that the API and UI show."""
    if o.desired == "paused":
        return Stage.PAUSED, None
    if o.desired in ("sleeping", "frozen"):
        return Stage.SLEEPING, None
    if not o.has_head:
        return Stage.NO_APP_FILE, "Push a commit with an app to main to deploy this space."
    if o.build_status in ("queued", "running"):
        return (Stage.RUNNING_BUILDING if o.serving else Stage.BUILDING), None
    if o.build_status == "failed":
        return _build_failed(o)
    return _runtime(o)


def _build_failed(o: Observed) -> tuple[Stage, str | None]:
    if o.serving:
        return Stage.RUNNING, f"The latest build failed; the previous version keeps running. {o.build_error or ''}".strip()
    return Stage(o.build_error_stage or Stage.BUILD_ERROR), o.build_error


def _runtime(o: Observed) -> tuple[Stage, str | None]:
    if o.wanted_state == "ready":
        return Stage.RUNNING, None
    if o.wanted_state == "failed":
        if o.serving:
            return Stage.RUNNING, f"The new version failed to start; the previous version keeps running. {o.wanted_message or ''}".strip()
        return Stage.RUNTIME_ERROR, o.wanted_message
    if o.wanted_state == "crashed":
        return Stage.RUNTIME_ERROR, o.wanted_message
    if o.build_status == "cancelled" and o.wanted_state is None:
        return (Stage.RUNNING if o.serving else Stage.BUILDING), None
    return (Stage.RUNNING_APP_STARTING if o.serving else Stage.APP_STARTING), None


def restart_backoff(restarts: int) -> timedelta | None:
    """Delay before restart number `restarts` (1-based) of a crashed app; None once it is a crash loop."""
    if restarts > MAX_RESTARTS:
        return None
    return timedelta(seconds=min(30, 2 ** (restarts - 1)))
