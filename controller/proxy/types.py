"""Contracts between the proxy and the rest of the controller.

The proxy's hot path only reads an in-memory `RouteSource`; the lead implements `AccessPolicy`,
`Activator` (and optionally `HealthSink`) against the database and runtimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RouteState = Literal["ready", "asleep", "paused", "unavailable"]
Scope = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a space's traffic goes, and whether it can go there now.

    `space_id` is "owner/name"; `slug` is the host label ("owner-name") under APPS_DOMAIN;
    `target` is the upstream origin, e.g. "http://127.0.0.1:7861" (no trailing slash).

    Path-based routing: the space is also reachable at `base_path` (default "/apps/owner/name").
    What the upstream sees depends on `strip_base_path`:

    * True (Gradio, static, Docker apps): the prefix is stripped, `/apps/o/n/config` is forwarded as
      `/config`. This is what Gradio expects with `GRADIO_ROOT_PATH=/apps/o/n`: like FastAPI's
      root_path, Gradio only uses it to build public URLs; its routes stay mounted at `/`.
      Host-based requests whose path starts with `base_path` (links Gradio built from its root path)
      are stripped the same way, so one process serves both addressing styles.
    * False (Streamlit): `STREAMLIT_SERVER_BASE_URL_PATH=apps/o/n` makes Streamlit (Tornado) mount
      every route under the prefix, so the path is forwarded unchanged; host-based requests get the
      prefix prepended (`/` -> `/apps/o/n/`).

    `state`: "ready" proxies; "asleep" wakes through the Activator; "paused" and "unavailable"
    answer 503 with `message` (e.g. "BUILDING", "RUNTIME_ERROR: exit code 1").
    """

    space_id: str
    slug: str
    target: str
    private: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # added to every app response (README custom_headers, allowed only)
    embeddable: bool = True  # False: README disable_embedding, framed by the platform's own page only
    visitor_token: bool = False  # HAProxy never carries it: the Python proxy adds what it needs (ZeroGPU's X-IP-Token)
    base_path: str = ""
    strip_base_path: bool = True
    state: RouteState = "ready"
    message: str = ""
    owner: str = field(init=False, repr=False, compare=False)
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner, _, name = self.space_id.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"space_id must be 'owner/name', got {self.space_id!r}")
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "target", self.target.rstrip("/"))
        base = self.base_path or f"/apps/{self.space_id}"
        object.__setattr__(self, "base_path", "/" + base.strip("/"))


class RouteSource(Protocol):
    """Synchronous, in-memory route lookups (see `routes.RouteTable`)."""

    def by_slug(self, slug: str) -> Route | None: ...

    def by_space(self, owner: str, name: str) -> Route | None: ...


class ActivitySink(Protocol):
    """Receives "this space was used at `now`" (epoch seconds). Must not block."""

    def record(self, space_id: str, now: float) -> None: ...


class AccessPolicy(Protocol):
    """Decides whether the request in `scope` may see a private space (cookie or bearer token)."""

    async def may_view(self, route: Route, scope: Scope) -> bool: ...


class Activator(Protocol):
    """Wakes a sleeping space and returns its ready route (raise to report failure)."""

    async def wake(self, route: Route) -> Route: ...


class HealthSink(Protocol):
    """Told when an upstream refused or dropped a connection (the instance may have died)."""

    def upstream_failed(self, route: Route, error: str) -> None: ...
