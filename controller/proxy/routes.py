"""RouteTable: the in-memory route source the proxy reads on every request."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from controller.proxy.types import Route


class RouteTable:
    """Thread-safe map of routes, O(1) by slug and by space.

    Writers (the controller's reconciler, lifecycle services) call `set` / `remove` / `replace_all`
    from any thread and serialize on a lock; readers never take it (a CPython dict lookup is atomic).
    """

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._lock = threading.Lock()
        self._by_space: dict[str, Route] = {}
        self._by_slug: dict[str, Route] = {}
        self.replace_all(routes)

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

    def remove(self, space_id: str) -> Route | None:
        with self._lock:
            old = self._by_space.pop(space_id.lower(), None)
            if old is not None:
                self._by_slug.pop(old.slug.lower(), None)
            return old

    def replace_all(self, routes: Iterable[Route]) -> None:
        """Swap in a complete set of routes (reconcile at startup)."""
        routes = list(routes)
        with self._lock:
            self._by_space = {r.space_id.lower(): r for r in routes}
            self._by_slug = {r.slug.lower(): r for r in routes}

    def all(self) -> list[Route]:
        with self._lock:
            return list(self._by_space.values())

    def __len__(self) -> int:
        return len(self._by_space)
