"""ThrottledActivity: the in-memory activity sink the proxy writes to on every request/message."""

from __future__ import annotations

import threading


class ThrottledActivity:
    """Keeps the last time each space was used; accepts at most one update per space per `interval`.

    `record` is a dict lookup (no I/O), safe to call per request, websocket message or SSE chunk.
    The controller calls `drain()` periodically (e.g. every `interval` seconds) and persists the
    returned {space_id: last_seen} to the database for the idle sweep.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._accepted: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, space_id: str, now: float) -> None:
        last = self._accepted.get(space_id)
        if last is not None and now - last < self.interval:
            return
        with self._lock:
            self._accepted[space_id] = now
            self._pending[space_id] = now

    def last_seen(self, space_id: str) -> float | None:
        """The last accepted activity time of the space (None if never seen by this process)."""
        return self._accepted.get(space_id)

    def drain(self) -> dict[str, float]:
        """Return and forget the updates accepted since the previous drain."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def forget(self, space_id: str) -> None:
        """Drop a space (deleted, or put to sleep so the next visit counts immediately)."""
        with self._lock:
            self._accepted.pop(space_id, None)
            self._pending.pop(space_id, None)
