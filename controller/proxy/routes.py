"""RouteTable: the in-memory route source the proxy reads on every request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from controller.proxy.types import Route

log = logging.getLogger(__name__)
RouteListener = Callable[[str], None]


class RouteTable:
    """Thread-safe map of routes, O(1) by slug and by space.

    Writers (the controller's reconciler, lifecycle services) call `set` / `remove` / `replace_all`
    from any thread and serialize on a lock; readers never take it (a CPython dict lookup is atomic).

    Listeners (`listen`) are told the space id of every route that changed, after the change: the one
    hook through which a separate data plane follows the table, whoever writes it (the leader's
    reconciler, a follower's RouteSync).
    """

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._lock = threading.Lock()
        self._by_space: dict[str, Route] = {}
        self._by_slug: dict[str, Route] = {}
        self._listeners: list[RouteListener] = []
        self.replace_all(routes)

    def listen(self, listener: RouteListener) -> None:
        """Call `listener(space_id)` after every change of that space's route (from the writer's thread)."""
        self._listeners.append(listener)

    def _changed(self, space_ids: Iterable[str]) -> None:
        for space_id in space_ids:
            for listener in self._listeners:
                try:
                    listener(space_id)
                except Exception:  # a data plane that fails must not stop routing in this process
                    log.exception("route listener failed for %s", space_id)

    def by_slug(self, slug: str) -> Route | None:
        return self._by_slug.get(slug.lower())

    def by_space(self, owner: str, name: str) -> Route | None:
        return self._by_space.get(f"{owner}/{name}".lower())

    def get(self, space_id: str) -> Route | None:
        return self._by_space.get(space_id.lower())

    def set(self, route: Route) -> None:
        """Add or replace the route of `route.space_id` (its slug may have changed)."""
        with self._lock:
            old = self._by_space.get(route.space_id.lower())
            if old is not None and old.slug.lower() != route.slug.lower():
                self._by_slug.pop(old.slug.lower(), None)
            self._by_space[route.space_id.lower()] = route
            self._by_slug[route.slug.lower()] = route
        self._changed([route.space_id])

    def remove(self, space_id: str) -> Route | None:
        with self._lock:
            old = self._by_space.pop(space_id.lower(), None)
            if old is not None:
                self._by_slug.pop(old.slug.lower(), None)
        if old is not None:
            self._changed([space_id])
        return old

    def replace_all(self, routes: Iterable[Route]) -> None:
        """Swap in a complete set of routes (reconcile at startup)."""
        routes = list(routes)
        with self._lock:
            before = self._by_space
            self._by_space = {r.space_id.lower(): r for r in routes}
            self._by_slug = {r.slug.lower(): r for r in routes}
        if self._listeners:
            after = self._by_space
            self._changed(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

    def all(self) -> list[Route]:
        with self._lock:
            return list(self._by_space.values())

    def __len__(self) -> int:
        return len(self._by_space)
