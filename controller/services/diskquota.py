"""Per-space disk quota (issue 19): an app that writes more than SPACEPORT_SPACE_DISK_BYTES is stopped.

What counts is what the running app itself wrote: on the local runtime its home, the writable layer of
/home/user/app and (unsandboxed) its TMPDIR, as allocated blocks (`localstate.disk_usage`); on the
docker runtime the container's writable layer (the engine's SizeRw). A sandboxed app's /tmp is a tmpfs
of the flavor's disk size held in memory (and charged to its memory limit), not on the host's disk.

A periodic check, not a hard limit: the kernel offers none that is cheap per instance here (prlimit
FSIZE bounds one file, not a tree; a size-limited tmpfs home would hold the app's files in RAM; an ext4
loop image per instance costs a preallocated file, a mount and root-only setup on every start; project
quotas need a filesystem mounted with them). So the reconciler's pass hands the running instances to
`DiskWatch.enforce`, which measures them in the background at most every
SPACEPORT_SPACE_DISK_CHECK_INTERVAL seconds (off the reconciler's lock: a tree of a million files takes
seconds) and, on the pass after a measurement found one over the limit, marks its instance failed with a
message that says what happened, stops it and frees what it wrote. A failed instance is not restarted
(no restart loop): the space shows RUNTIME_ERROR until its owner pushes or restarts it (a new instance
starts with an empty disk). An app can overshoot by what it writes within one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, runtime_checkable

from starlette.concurrency import run_in_threadpool

from controller.domain.units import format_bytes
from controller.runtimes.base import InstanceStatus, Runtime, RuntimeFailure, State
from controller.runtimes.localstate import MAX_DEPTH, TooDeep, disk_usage
from controller.services import instances as db
from controller.services import volumes
from controller.services.platform import Platform

log = logging.getLogger(__name__)
LIVE = (State.RUNNING, State.FROZEN)
SETTING = "SPACEPORT_SPACE_DISK_BYTES"


@runtime_checkable
class DiskMeter(Protocol):
    async def disk_usage(self, name: str, stop_after: int | None = None) -> int | None: ...


def over_quota_message(used: int, limit: int) -> str:
    return (f"The app wrote {format_bytes(used)} to its disk, more than the {format_bytes(limit)} per space "
            f"({SETTING}); it was stopped. Write less, or ask an admin to raise the limit.")


def storage_over_message(used: int, limit: int, tier: str) -> str:
    return (f"The app wrote {format_bytes(used)} to its persistent storage (/data), more than the {format_bytes(limit)} "
            f"of its {tier} tier; it was stopped. Its files are kept: request a larger tier "
            "(request_space_storage), or restart it and delete files.")


TOO_DEEP = (f"The app nested directories more than {MAX_DEPTH} levels deep on its disk, which cannot be measured "
            f"against the per-space disk limit ({SETTING}); it was stopped. Keep its files less deeply nested.")


class DiskWatch:
    """Measures running instances' disk use in the background; the reconciler's pass enforces it."""

    def __init__(self, platform: Platform, runtime: Runtime, *, kick: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.platform, self.runtime, self.kick, self.clock = platform, runtime, kick, clock
        self.limit = platform.settings.space_disk_bytes
        self.interval = platform.settings.space_disk_check_interval
        self.meter: DiskMeter | None = runtime if isinstance(runtime, DiskMeter) else None
        self._task: asyncio.Task[None] | None = None
        self._last = -math.inf
        self._over: dict[str, str] = {}  # instance name -> why it must stop, found by the last measurement
        self.last_round_seconds = 0.0  # what the last measurement of every running instance took

    async def enforce(self, actual: dict[str, InstanceStatus], starting: dict[str, asyncio.Task[bool]]) -> None:
        """Called by the reconciler's pass, under its lock, before it reads the database: stop what the
        last measurement found over the limit (still live), then start the next measurement when due."""
        if self.meter is None:
            return
        over, self._over = self._over, {}
        for name, message in over.items():
            status = actual.get(name)
            if status is not None and status.state in LIVE:
                await self._stop(name, message, starting)
                actual[name] = replace(status, state=State.EXITED, endpoint=None, message="stopped")
        self._schedule([name for name, s in actual.items() if s.state is State.RUNNING])

    def close(self) -> None:
        """The reconciler stops: so does a measurement in progress (its thread finishes on its own)."""
        if self._task is not None:
            self._task.cancel()

    def _schedule(self, running: list[str]) -> None:
        if not running or (self._task is not None and not self._task.done()):
            return
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self._task = asyncio.create_task(self._measure(running))

    async def _measure(self, names: list[str]) -> None:
        assert self.meter is not None
        began = time.monotonic()
        for name in names:
            try:
                used = await self.meter.disk_usage(name, self.limit)
            except TooDeep:
                self._over[name] = TOO_DEEP
                continue
            except Exception as exc:  # a failed measurement must never stop the reconciler
                log.warning("cannot measure the disk use of %s: %s", name, exc)
                continue
            if isinstance(used, int) and used > self.limit:
                self._over[name] = over_quota_message(used, self.limit)
        await self._measure_storage(names)
        self.last_round_seconds = time.monotonic() - began
        if self._over:
            self.kick()

    async def _measure_storage(self, names: list[str]) -> None:
        """Persistent storage (/data) against its tier's size: the same watch, the directory on the host."""
        try:
            found = await run_in_threadpool(volumes.storage_limits, self.platform, names)
        except Exception as exc:
            log.warning("cannot read the storage of running instances: %s", exc)
            return
        for name, storage in found.items():
            try:
                used = await run_in_threadpool(disk_usage, [storage.path], storage.limit)
            except TooDeep:
                self._over[name] = TOO_DEEP
                continue
            except OSError as exc:
                log.warning("cannot measure the persistent storage of %s: %s", name, exc)
                continue
            if used > storage.limit:
                self._over[name] = storage_over_message(used, storage.limit, storage.tier)

    async def _stop(self, name: str, message: str, starting: dict[str, asyncio.Task[bool]]) -> None:
        task = starting.pop(name, None)
        if task is not None:  # a start still watching its health would record a crash (and a restart)
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=5)
        log.warning("instance %s: %s", name, message)
        await run_in_threadpool(db.update_row, self.platform, name, state="failed", message=message)
        try:
            await self.runtime.stop(name)
            discard = getattr(self.runtime, "discard_writes", None)
            if discard is not None:
                await discard(name)
        except RuntimeFailure as exc:
            log.warning("stopping over-quota instance %s failed: %s", name, exc)
