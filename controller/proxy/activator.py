"""Single-flight helper used to wake a sleeping space once, however many visitors arrive."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Concurrent callers with the same key await one shared task.

    The task runs to completion even if every caller gives up (timeouts, disconnects): callers await
    it through `asyncio.shield`. Once it finishes, the next call for the key starts a new flight.
    Must be used from a single event loop.
    """

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[T]] = {}

    def in_flight(self, key: Hashable) -> bool:
        return key in self._flights

    def start(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Return the running task for `key`, starting `make()` if there is none."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._flights[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        return task

    async def run(self, key: Hashable, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Join (or start) the flight for `key` and wait for its result, at most `timeout` seconds."""
        task = self.start(key, make)
        return await asyncio.wait_for(asyncio.shield(task), timeout)

    def _finished(self, key: Hashable, task: asyncio.Future[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: failures are reported to the waiters, not the loop
