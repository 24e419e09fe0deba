"""Level-based reconciler: make what runs match the database, on a timer, at startup and when kicked.

It adopts running instances after a controller restart (the runtime's list() finds them; nothing is
restarted), starts and health-checks wanted instances, swaps routes when a new instance is healthy,
restarts crashed apps with backoff, freezes/stops/wakes for sleep, and removes orphans. It is also the
proxy's Activator (the proxy makes it one wake per space however many visitors arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import aiohttp
from starlette.concurrency import run_in_threadpool

from controller.db.models import utcnow
from controller.domain.errors import SpaceportError
from controller.domain.lifecycle import (
    exited_message,
    last_traceback_line,
    start_problem,
    start_timeout_message,
)
from controller.proxy.activity import ThrottledActivity
from controller.proxy.routes import RouteTable
from controller.proxy.types import Route
from controller.runtimes.base import AppExited, InstanceStatus, Runtime, RuntimeFailure, State
from controller.services import instances as db
from controller.services import quotas, routing
from controller.services.diskquota import DiskWatch
from controller.services.instances import SpaceSnapshot
from controller.services.platform import Platform
from controller.services.startwatch import StartWatch, log_lines

log = logging.getLogger(__name__)
LIVE = (State.RUNNING, State.FROZEN)
RETIRE_GRACE = timedelta(seconds=2)
EXIT_TAIL_LINES = 20  # log lines an exit message keeps


class WakeFailed(Exception):
    """A sleeping space could not be woken; the message says why (quota, capacity, crash)."""


class Reconciler:
    def __init__(self, platform: Platform, runtime: Runtime, routes: RouteTable, activity: ThrottledActivity,
                 *, interval: float = 2.0, announce: Callable[[int, str], None] = lambda _pk, _space_id: None) -> None:
        self.platform, self.runtime, self.routes, self.activity = platform, runtime, routes, activity
        self.interval = interval
        self.announce = announce  # tells other replicas a route changed (space pk, or 0 when it is gone)
        self._tasks: dict[str, asyncio.Task[bool]] = {}
        self._kicked = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._woken: dict[int, float] = {}  # space pk -> when a wake changed its desired state
        self._waking: set[str] = set()  # spaces whose wake is in flight: new visitors join it
        self.starts = 0  # instances started by this process (observability, tests)
        self.disk = DiskWatch(platform, runtime, kick=self.kick)  # per-space disk quota (issue 19)

    # -- driving -------------------------------------------------------------------------------
    def kick(self) -> None:
        """Thread-safe: reconcile soon (called after commits that change desired state)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._kicked.set)

    async def run(self, ready: Callable[[], None] = lambda: None) -> None:
        self._loop = asyncio.get_running_loop()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            await self._safe_pass()
            ready()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kicked.wait(), self.interval)
                self._kicked.clear()
                await self._safe_pass()
        finally:
            self.disk.close()
            await self._http.close()

    async def _safe_pass(self) -> None:
        try:
            await self.reconcile_once()
        except Exception:
            log.exception("reconcile pass failed; retrying on the next tick")

    async def reconcile_once(self, only: int | None = None) -> None:
        async with self._lock:
            seen = self.activity.drain()
            if seen:
                await run_in_threadpool(db.record_activity, self.platform, seen)
            started = time.monotonic()
            actual = {s.name: s for s in await self.runtime.list()}
            await self.disk.enforce(actual, self._tasks)  # stops apps over their disk quota
            snaps = await run_in_threadpool(db.load_snapshots, self.platform, only)
            batch: list[db.StageRow] = []
            for snap in snaps:
                if only is None and self._woken.get(snap.pk, 0.0) > started:
                    continue  # woken since this pass read the database: its snapshot is stale
                await self._reconcile(snap, actual, batch)
            if batch:
                await run_in_threadpool(db.write_stages, self.platform, batch)
            if only is None:
                await self._remove_orphans(snaps, actual)
                self._drop_stale_routes(snaps)

    # -- one space -----------------------------------------------------------------------------
    async def _reconcile(self, snap: SpaceSnapshot, actual: dict[str, InstanceStatus], batch: list[db.StageRow]) -> None:
        if snap.desired in ("sleeping", "paused"):
            await self._stop_all(snap, actual)
        elif snap.desired == "frozen":
            await self._freeze(snap, actual)
        elif snap.wanted:
            await self._run_wanted(snap, actual)
        if not (snap.instances or snap.wanted):  # nothing runs: no I/O beyond the batched stage write
            await self._publish(snap, batch)
            return
        fresh = (await run_in_threadpool(db.load_snapshots, self.platform, snap.pk))[0]
        await self._publish(fresh)  # the route moves to the new instance before the old one goes
        await self._retire_others(fresh, actual)

    async def _run_wanted(self, snap: SpaceSnapshot, actual: dict[str, InstanceStatus]) -> None:
        assert snap.wanted is not None
        row = snap.row(snap.wanted)
        status = actual.get(snap.wanted)
        if row is None or row.state in ("starting", "stopped"):
            self._launch(snap)
        elif row.state == "frozen" and status is not None and status.state is State.FROZEN:
            self._background(snap.wanted, self._thaw(snap.pk, snap.wanted))  # on Kubernetes a thaw waits for a pod
        elif row.state in ("ready", "frozen") and (status is None or status.state not in LIVE):
            await self._crashed(snap.wanted, status)
        elif row.state == "crashed" and row.next_restart_at is not None and row.next_restart_at <= utcnow():
            self._launch(snap)

    async def _crashed(self, name: str, status: InstanceStatus | None) -> None:
        detail = status.message if status is not None and status.message else "the app stopped"
        code = status.exit_code if status is not None else None
        log.warning("instance %s crashed (exit code %s)", name, code)
        message = exited_message(code, last_traceback_line(detail.splitlines()), detail, before_answering=False)
        await run_in_threadpool(db.mark_crashed, self.platform, name, message)

    async def _retire_others(self, snap: SpaceSnapshot, actual: dict[str, InstanceStatus]) -> None:
        """Once the wanted instance is ready and routed (for a short grace, so in-flight requests to the
        old one finish), remove the older ones."""
        wanted = snap.row(snap.wanted) if snap.wanted else None
        if snap.desired != "running" or wanted is None or wanted.state != "ready" or wanted.ready_at is None:
            return
        if utcnow() - wanted.ready_at < RETIRE_GRACE:
            return
        old = [r.name for r in snap.instances if r.name != snap.wanted and r.name not in self._tasks]
        for name in old:
            if name in actual:
                await self._quietly(self.runtime.remove(name))
        if old:
            await run_in_threadpool(db.retire, self.platform, old)

    async def _stop_all(self, snap: SpaceSnapshot, actual: dict[str, InstanceStatus]) -> None:
        for row in snap.instances:
            task = self._tasks.pop(row.name, None)
            if task is not None:
                task.cancel()
            if row.name != snap.wanted:
                await self._quietly(self.runtime.remove(row.name))
                await run_in_threadpool(db.retire, self.platform, [row.name])
                continue
            status = actual.get(row.name)
            if status is not None and status.state in LIVE:
                await self._quietly(self.runtime.stop(row.name))
            if row.state != "stopped":
                await run_in_threadpool(db.update_row, self.platform, row.name, state="stopped")
        await run_in_threadpool(db.release, self.platform, snap.pk)

    async def _freeze(self, snap: SpaceSnapshot, actual: dict[str, InstanceStatus]) -> None:
        row = snap.row(snap.wanted) if snap.wanted else None
        status = actual.get(row.name) if row else None
        if row is not None and row.state == "ready" and status is not None and status.state is State.RUNNING:
            await self.runtime.freeze(row.name)
            await run_in_threadpool(db.update_row, self.platform, row.name, state="frozen")

    async def _remove_orphans(self, snaps: list[SpaceSnapshot], actual: dict[str, InstanceStatus]) -> None:
        known = {r.name for s in snaps for r in s.instances} | set(self._tasks)
        for name in actual:
            if name not in known:
                log.info("removing orphan instance %s", name)
                await self._quietly(self.runtime.remove(name))

    async def _quietly(self, action: object) -> None:
        try:
            await action  # type: ignore[misc]
        except RuntimeFailure as exc:
            log.warning("runtime action failed: %s", exc)

    # -- starting ------------------------------------------------------------------------------
    def _launch(self, snap: SpaceSnapshot) -> asyncio.Task[bool]:
        assert snap.wanted is not None
        return self._background(snap.wanted, self._start(snap))

    def _background(self, name: str, work: Coroutine[Any, Any, bool]) -> asyncio.Task[bool]:
        """Run a start or thaw of instance `name` outside the pass (one at a time per instance)."""
        task = self._tasks.get(name)
        if task is None:
            task = asyncio.create_task(work)
            self._tasks[name] = task
            task.add_done_callback(lambda _t: self._forget(name))
        else:
            work.close()  # already in flight: join it
        return task

    async def _thaw(self, pk: int, name: str) -> bool:
        try:
            await self.runtime.thaw(name)
        except RuntimeFailure as exc:  # e.g. the new pod never became healthy: a crash, restarted with backoff
            await run_in_threadpool(db.mark_crashed, self.platform, name, str(exc))
            self.kick()
            return False
        await run_in_threadpool(db.update_row, self.platform, name, state="ready")
        await self._publish_fresh(pk)
        return True

    def cancel_starts(self) -> None:
        """Stop the starts and thaws in flight (this process no longer leads: the new leader owns them now)."""
        for task in list(self._tasks.values()):
            task.cancel()

    def _forget(self, name: str) -> None:
        self._tasks.pop(name, None)

    async def _start(self, snap: SpaceSnapshot) -> bool:
        name = snap.wanted
        assert name is not None
        if await self._already_ready(snap.pk, name):
            return True  # another start finished after the caller read the row: starting again would undo it
        await run_in_threadpool(db.ensure_row, self.platform, snap.pk, name)
        await run_in_threadpool(db.update_row, self.platform, name, state="starting", message=None)
        await self._publish_fresh(snap.pk)
        try:
            spec = await run_in_threadpool(db.instance_spec, self.platform, snap.pk, name)
            earlier, _ = await log_lines(self.runtime, name)  # output of an earlier run of this instance
            endpoint = await self.runtime.start(spec)
            self.starts += 1
        except AppExited as exc:  # a crash before any endpoint: its last lines say why, restarted with backoff
            _, lines = await log_lines(self.runtime, name, earlier)
            message = exited_message(exc.exit_code, last_traceback_line(lines), "\n".join(lines[-EXIT_TAIL_LINES:]),
                                     before_answering=True)
            await run_in_threadpool(db.mark_crashed, self.platform, name, message)
            self.kick()
            return False
        except (SpaceportError, RuntimeFailure) as exc:
            message = getattr(exc, "message", str(exc))
            await run_in_threadpool(db.update_row, self.platform, name, state="failed", message=message)
            self.kick()
            return False
        outcome, message = await self._health(snap, StartWatch(self.runtime, name, earlier), endpoint.url)
        if outcome == "ready":
            await run_in_threadpool(db.update_row, self.platform, name, state="ready", endpoint=endpoint.url,
                                    ready_at=utcnow(), message=None)
            await self._publish_fresh(snap.pk)
        elif outcome == "timeout":  # it ran all along without a good answer: restarting would not help
            await self._quietly(self.runtime.stop(name))
            await run_in_threadpool(db.update_row, self.platform, name, state="failed", message=message)
        else:
            await self._quietly(self.runtime.stop(name))
            await run_in_threadpool(db.mark_crashed, self.platform, name, message)
        self.kick()
        return outcome == "ready"

    async def _already_ready(self, pk: int, name: str) -> bool:
        current = await run_in_threadpool(db.load_snapshots, self.platform, pk)
        row = current[0].row(name) if current else None
        return row is not None and row.state == "ready"

    async def _health(self, snap: SpaceSnapshot, watch: StartWatch, origin: str) -> tuple[str, str]:
        """Poll the app until it answers (any status below 500): "ready"; it exits: "exited"; or the start
        timeout passes: "timeout". Meanwhile the stage message says what is wrong (an error answer, a
        traceback in the log), stored only when that text changes."""
        deadline = time.monotonic() + snap.startup_timeout
        delay, shown = 0.05, None
        while time.monotonic() < deadline:
            answer = await self._probe(origin + snap.health_path)
            if answer is not None and answer < 500:
                return "ready", ""
            status = await self.runtime.status(watch.name)
            if status.state not in LIVE:
                cause = await watch.read_cause(answer, force=True)
                return "exited", exited_message(status.exit_code, cause, status.message, before_answering=True)
            # what the app answers or printed, else why the runtime has not run it yet (a Pending pod's reason)
            problem = start_problem(answer, snap.health_path, await watch.read_cause(answer)) or status.message or None
            if problem != shown:
                shown = problem
                await run_in_threadpool(db.update_row, self.platform, watch.name, message=problem)
                await self._publish_fresh(snap.pk)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        return "timeout", start_timeout_message(shown, snap.startup_timeout)

    async def _probe(self, url: str) -> int | None:
        """The HTTP status the app answers on url, None when nothing answers."""
        assert self._http is not None
        try:
            async with self._http.get(url, allow_redirects=False) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _publish_fresh(self, pk: int) -> None:
        snaps = await run_in_threadpool(db.load_snapshots, self.platform, pk)
        if snaps:  # gone when the space was deleted meanwhile
            await self._publish(snaps[0])

    # -- routes and stage ----------------------------------------------------------------------
    async def _publish(self, snap: SpaceSnapshot, batch: list[db.StageRow] | None = None) -> None:
        """Route the space and store its derived stage (now, or in the pass's batch)."""
        derived = routing.derive(snap, quotas.catalog(self.platform), waking=snap.space_id in self._waking)
        hardware = snap.hardware if derived.serving is not None else None
        stage, message = derived.stage, derived.message
        if stage.value != snap.stage or message != snap.error_message or hardware != snap.current_hardware:
            row = db.StageRow(snap, stage.value, message, hardware)
            if batch is None:
                await run_in_threadpool(db.write_stages, self.platform, [row])
            else:
                batch.append(row)
        if self.routes.get(snap.space_id) != derived.route:
            self.routes.set(derived.route)
            self.announce(snap.pk, snap.space_id)

    def _drop_stale_routes(self, snaps: list[SpaceSnapshot]) -> None:
        live = {s.space_id for s in snaps}
        for route in self.routes.all():
            if route.space_id not in live:
                self.routes.remove(route.space_id)
                self.announce(0, route.space_id)

    # -- activator -----------------------------------------------------------------------------
    async def wake(self, route: Route) -> Route:
        """The proxy's Activator; it already runs one wake per space (SingleFlight) for all visitors."""
        self._waking.add(route.space_id)
        try:
            return await self._wake(route)
        finally:
            self._waking.discard(route.space_id)

    async def _wake(self, route: Route) -> Route:
        pk = await run_in_threadpool(db.set_desired, self.platform, route.space_id, "running", ("sleeping", "frozen"))
        if pk is None:
            raise WakeFailed(f"Space {route.space_id} no longer exists.")
        self._woken[pk] = time.monotonic()  # passes that read the old desired state must leave it alone
        snap = (await run_in_threadpool(db.load_snapshots, self.platform, pk))[0]
        row = snap.row(snap.wanted) if snap.wanted else None
        if row is not None and row.state == "frozen":
            await self.runtime.thaw(row.name)
            await run_in_threadpool(db.update_row, self.platform, row.name, state="ready")
        elif snap.wanted:
            ok = await self._launch(snap)
            if not ok:
                after = (await run_in_threadpool(db.load_snapshots, self.platform, pk))[0]
                failed = after.row(snap.wanted)
                raise WakeFailed(failed.message if failed and failed.message else "The app failed to start.")
        await self.reconcile_once(only=pk)
        woken = self.routes.get(route.space_id)
        if woken is None or woken.state != "ready":
            raise WakeFailed(woken.message if woken else "The space is gone.")
        return woken

