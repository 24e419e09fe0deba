"""Replica: one controller process's part in a site that runs one or several of them.

Every replica serves the API, git, the web UI and the proxy for every space. The one holding the
`leader` lease (leases.py) reconciles: it alone starts, stops and sweeps instances and writes stages,
and it announces every route change on the bus. The others follow: they load routes from the database
(at once on a `route` notice, fully on `resync` and on a timer), flush their visitors' activity to
the database for the leader's idle sweep, and hand wakes to the leader (desired state + `kick`), then
hold visitors until the route they reload says ready. When the leader dies its lease goes with its
database connection and a follower takes over within `LEASE_RETRY` seconds; the new leader's first
pass adopts the running instances, as after a controller restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool

from controller.proxy.activity import ThrottledActivity
from controller.proxy.routes import RouteTable
from controller.proxy.types import Route
from controller.services import instances as db
from controller.services import quotas, routing
from controller.services.bus import KICK, RESYNC, ROUTE, Bus
from controller.services.leases import Lease
from controller.services.platform import Platform
from controller.services.reconciler import Reconciler, WakeFailed

log = logging.getLogger(__name__)
LEASE_RETRY = 1.0  # seconds between a follower's tries for the lease, and the leader's checks of it
WAKE_GRACE = 60.0  # seconds a follower holds a visitor beyond the space's startup timeout


class RouteSync:
    """A follower's routes: reloaded from the database, never written there."""

    def __init__(self, platform: Platform, routes: RouteTable) -> None:
        self.platform, self.routes = platform, routes
        self._changed: dict[str, asyncio.Event] = {}

    async def load_all(self) -> None:
        snaps = await run_in_threadpool(db.load_snapshots, self.platform)
        catalog = quotas.catalog(self.platform)
        self.routes.replace_all(routing.derive(s, catalog).route for s in snaps)
        for event in self._changed.values():
            event.set()

    async def load(self, pk: int, space_id: str) -> None:
        snaps = await run_in_threadpool(db.load_snapshots, self.platform, pk) if pk else []
        if snaps and snaps[0].space_id == space_id:
            self.routes.set(routing.derive(snaps[0], quotas.catalog(self.platform)).route)
        else:
            self.routes.remove(space_id)
        event = self._changed.get(space_id)
        if event is not None:
            event.set()

    async def next_change(self, space_id: str, timeout: float) -> None:
        """Wait until the route of space_id is reloaded (or timeout seconds pass)."""
        event = self._changed.setdefault(space_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()


class Replica:
    def __init__(self, platform: Platform, reconciler: Reconciler, routes: RouteTable, activity: ThrottledActivity,
                 bus: Bus, lease: Lease, *, interval: float) -> None:
        self.platform, self.reconciler, self.routes, self.activity = platform, reconciler, routes, activity
        self.bus, self.lease, self.interval = bus, lease, interval
        self.sync = RouteSync(platform, routes)
        self.role: Literal["starting", "leader", "follower"] = "starting"
        self._reloads: set[asyncio.Task[None]] = set()
        self._reloaded = 0.0  # when this follower last reloaded every route (monotonic)
        reconciler.announce = lambda pk, space_id: bus.publish(ROUTE, f"{pk} {space_id}")

    # -- what the rest of the process calls -----------------------------------------------------
    def kick(self) -> None:
        """Thread-safe: desired state changed; the leader reconciles soon, wherever it runs."""
        if self.role != "follower":  # also while starting: the first pass is about to run here
            self.reconciler.kick()
        if self.role != "leader":
            self.bus.publish(KICK)

    async def wake(self, route: Route) -> Route:
        """The proxy's Activator (one call per space at a time: the proxy's SingleFlight)."""
        if self.role == "leader":
            return await self.reconciler.wake(route)
        return await self._wake_through_leader(route)

    # -- driving -------------------------------------------------------------------------------
    async def run(self, ready: Callable[[], None] = lambda: None) -> None:
        listener = asyncio.create_task(self.bus.listen(self._on_notice))
        try:
            while True:
                if await run_in_threadpool(self.lease.acquire):
                    await self._lead(ready)
                else:
                    await self._follow(ready)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await run_in_threadpool(self.lease.release)

    async def _lead(self, ready: Callable[[], None]) -> None:
        self.role = "leader"
        log.info("this replica holds the leader lease: it reconciles")
        task = asyncio.create_task(self.reconciler.run(ready))
        try:
            while not task.done() and await run_in_threadpool(self.lease.check):
                await asyncio.sleep(LEASE_RETRY)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.reconciler.cancel_starts()
        self.role = "follower"
        log.warning("this replica lost the leader lease: it follows")

    async def _follow(self, ready: Callable[[], None]) -> None:
        """One follower period: every `interval` flush activity and reload every route (notices bring single
        changes sooner); every LEASE_RETRY seconds try for the lease again."""
        if self.role != "follower":
            self.role, self._reloaded = "follower", 0.0
            log.info("another replica leads: this one follows")
        if time.monotonic() - self._reloaded >= self.interval:
            try:
                await self._flush_activity()
                await self.sync.load_all()
            except Exception:  # the database restarting: keep the routes we have, try again next period
                log.exception("follower reload failed; retrying")
            else:
                self._reloaded = time.monotonic()
                ready()
        await asyncio.sleep(LEASE_RETRY)

    async def _flush_activity(self) -> None:
        seen = self.activity.drain()
        if seen:
            await run_in_threadpool(db.record_activity, self.platform, seen)

    def _on_notice(self, topic: str, data: str) -> None:
        if topic == KICK and self.role == "leader":
            self.reconciler.kick()
        elif topic == ROUTE and self.role == "follower":
            pk, _, space_id = data.partition(" ")
            if pk.isdigit() and space_id:
                self._spawn(self.sync.load(int(pk), space_id))
        elif topic == RESYNC and self.role == "follower":
            self._spawn(self.sync.load_all())

    def _spawn(self, reload: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(_logged(reload))
        self._reloads.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._reloads.discard)

    # -- waking through the leader -------------------------------------------------------------
    async def _wake_through_leader(self, route: Route) -> Route:
        pk = await run_in_threadpool(db.set_desired, self.platform, route.space_id, "running", ("sleeping", "frozen"))
        if pk is None:
            raise WakeFailed(f"Space {route.space_id} no longer exists.")
        snaps = await run_in_threadpool(db.load_snapshots, self.platform, pk)
        deadline = time.monotonic() + (snaps[0].startup_timeout if snaps else 0.0) + WAKE_GRACE
        self.bus.publish(KICK)
        await self.sync.load(pk, route.space_id)
        while (current := self.routes.get(route.space_id)) is not None and current.state != "ready":
            if current.state in ("unavailable", "paused"):
                raise WakeFailed(current.message)
            if time.monotonic() > deadline:
                raise WakeFailed("The space did not start in time (no replica holds the leader lease?).")
            await self.sync.next_change(route.space_id, timeout=self.interval)
            if self.role == "leader":  # took over meanwhile: finish the wake ourselves
                return await self.reconciler.wake(route)
            await self.sync.load(pk, route.space_id)
        if current is None:
            raise WakeFailed("The space is gone.")
        return current


async def _logged(reload: Coroutine[Any, Any, None]) -> None:
    try:
        await reload
    except Exception:  # a notice's reload is a shortcut: the periodic reload covers a failed one
        log.exception("route reload failed")
