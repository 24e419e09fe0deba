"""A space's route, derived from its database snapshot: the same on the leader (which also writes the
stage) and on every other replica (which only routes)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from controller.db.models import utcnow
from controller.domain.hardware import Catalog
from controller.domain.lifecycle import derive_stage
from controller.domain.stages import Stage
from controller.proxy.types import Route
from controller.services.instances import SpaceSnapshot, observed


@dataclass(frozen=True)
class Derived:
    route: Route
    stage: Stage
    message: str | None
    serving: str | None  # the endpoint that answers, if any


def derive(snap: SpaceSnapshot, catalog: Catalog, *, waking: bool = False) -> Derived:
    """`waking`: a wake of this space is in flight in this process (visitors wait for it, not a 503)."""
    serving = serving_endpoint(snap)
    stage, message = derive_stage(observed(snap, serving is not None))
    route = route_of(snap, serving, stage, message, waking=waking)
    if needs_visitor_token(snap, catalog):
        route = replace(route, visitor_token=True)
    return Derived(route, stage, message, serving)


def needs_visitor_token(snap: SpaceSnapshot, catalog: Catalog) -> bool:
    """A space on a zero-* flavor: its requests carry a visitor token only the Python proxy signs."""
    flavor = catalog.flavors.get(snap.current_hardware or snap.hardware)
    return flavor is not None and flavor.zero_gpu is not None


def serving_endpoint(snap: SpaceSnapshot) -> str | None:
    ready = [r for r in snap.instances if r.state == "ready" and r.endpoint]
    wanted = [r for r in ready if r.name == snap.wanted]
    chosen = wanted or sorted(ready, key=lambda r: r.ready_at or utcnow(), reverse=True)
    return chosen[0].endpoint if chosen else None


def route_of(snap: SpaceSnapshot, target: str | None, stage: Stage, message: str | None, *, waking: bool) -> Route:
    base = Route(space_id=snap.space_id, slug=snap.slug, target=target or "", private=snap.private,
                 strip_base_path=snap.sdk != "streamlit", headers=snap.headers, embeddable=snap.embeddable)
    if snap.desired == "paused":
        return replace(base, state="paused", message="The owner paused this space.")
    if snap.desired in ("sleeping", "frozen"):
        return replace(base, state="asleep", message="Sleeping")
    if not target and (waking or stage is Stage.APP_STARTING):
        # visitors wait for the start in progress (the activator joins it) instead of getting a 503;
        # the message is what is wrong with it so far (an error answer), shown on the waking page
        return replace(base, state="asleep", message=message or "")
    if target:
        return base
    return replace(base, state="unavailable", message=f"{stage.value}: {message or _waiting(stage)}")


def _waiting(stage: Stage) -> str:
    return {
        Stage.BUILDING: "the app is being built",
        Stage.APP_STARTING: "the app is starting",
        Stage.NO_APP_FILE: "nothing deployed yet",
    }.get(stage, "not running")
