"""ZeroGPU over the database and the runtime: the device API's use cases, quotas, the env of zero-* apps.

One `ZeroGpu` per serving process holds the pools (controller.domain.zerogpu.Pool) in memory; leases are
written to `zerogpu_leases` (what quotas charge). Pool state is per process: with several serve replicas
the device API URL must point at one of them (SPACEPORT_ZEROGPU_DEVICE_API_URL).

Device visibility: the package forks one worker per device and calls `/allow` with its pid. The main
process never gets a GPU; on the docker and Kubernetes runtimes the device would be added to that
worker's container cgroup (devices.allow / an eBPF device program for /dev/nvidiaN) at /allow and removed
at release; no GPU here, so this slice records the leased UUID, hands it to the package (which sets
CUDA_VISIBLE_DEVICES in the fork before torch initialises CUDA) and enforces the lease by killing
the worker at its deadline and whenever the device goes to another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from controller.config import Settings
from controller.db.models import (
    Account,
    Instance,
    Membership,
    PlatformSetting,
    Space,
    ZeroGpuDevice,
    ZeroGpuLease,
    ZeroGpuQuota,
)
from controller.domain import zerogpu as dz
from controller.domain.errors import BadRequest, NotFound
from controller.domain.hardware import Catalog, HardwareFlavor
from controller.runtimes import procs
from controller.services import listener, quotas
from controller.services.platform import Platform

log = logging.getLogger(__name__)
DEFAULTS_KEY = "zerogpu_defaults"
DEFAULT_DURATION = 60  # what the package asks for without a duration
LIVE_STATES = ("starting", "ready", "frozen")  # may call the device API (a frozen one answers once thawed)
MAX_QUEUED_PER_INSTANCE = 16  # an instance's calls waiting at once; past it: "No GPU was available"
CALLER_TTL = 2.0  # seconds a looked-up calling instance is trusted without the database
CALLER_CACHE = 4096  # bound on remembered callers (cleared when full)
RUNNING_STATES = ("starting", "ready")  # may keep GPU workers: any other state's are killed (sweep)
OWNED_PREFIXES = ("SPACES_ZERO_GPU", "SPACES_ZERO_DEVICE_API_URL", "ZEROGPU_CUDA_")


# ---- env of an instance on a zero-* flavor ----------------------------------------------------------


def device_api_base(settings: Settings) -> str:
    """The operator's ZEROGPU_DEVICE_API_URL, else the platform's own listener, else PUBLIC_URL."""
    own = None if settings.zerogpu_device_api_url else listener.base_url(settings)
    return (settings.zerogpu_device_api_url or own or settings.public_url or "http://localhost:8000").rstrip("/")


def device_api_url(platform: Platform, instance: str) -> str:
    return f"{device_api_base(platform.settings)}/zerogpu/{dz.instance_capability(platform.settings.key, instance)}/"


def with_zero_env(platform: Platform, requested_hardware: str, instance: str, env: dict[str, str]) -> dict[str, str]:
    """`env` with the ZeroGPU variables the platform owns: SPACES_ZERO_GPU, the device API URL and the
    ZEROGPU_CUDA_* description on a zero-* flavor; none of them on any other flavor (the `spaces`
    decorator is then a no-op), whatever the space's variables say."""
    env = {k: v for k, v in env.items() if not k.startswith(OWNED_PREFIXES)}
    catalog = quotas.catalog(platform)
    flavor = catalog.flavors.get(requested_hardware)
    if flavor is None or flavor.zero_gpu is None:
        return env
    cuda = catalog.accelerator(flavor.zero_gpu).cuda
    env.update({"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": device_api_url(platform, instance)})
    env.update({f"ZEROGPU_CUDA_{key.upper()}": value for key, value in cuda.items()})
    return env


# ---- quotas -------------------------------------------------------------------------------------------


def policy(session: Session) -> dz.QuotaPolicy:
    row = session.get(PlatformSetting, DEFAULTS_KEY)
    values: dict[str, Any] = row.value if row is not None and isinstance(row.value, dict) else {}
    users: dict[int, int] = {}
    orgs: dict[int, int] = {}
    for q, account in session.execute(select(ZeroGpuQuota, Account).join(Account, ZeroGpuQuota.account_id == Account.id)):
        (orgs if account.kind == "org" else users)[account.id] = q.seconds_per_day
    base = dz.QuotaPolicy()
    return dz.QuotaPolicy(anonymous=int(values.get("anonymous", base.anonymous)),
                          signed_in=int(values.get("signed_in", base.signed_in)),
                          max_duration=int(values.get("max_duration", base.max_duration)), users=users, orgs=orgs)


def used_today(session: Session, subject: str, now: datetime) -> float:
    """Seconds charged to `subject` since the UTC day began (released leases)."""
    stmt = select(func.coalesce(func.sum(ZeroGpuLease.charged_seconds), 0.0)).where(
        ZeroGpuLease.subject == subject, ZeroGpuLease.released_at >= dz.day_start(now))
    return float(session.scalar(stmt) or 0.0)


def daily_limit(session: Session, visitor: dz.Visitor) -> int:
    org_ids: list[int] = []
    if visitor.user_id is not None:
        org_ids = list(session.scalars(select(Membership.org_id).where(Membership.user_id == visitor.user_id)))
    return policy(session).daily_limit(visitor.user_id, org_ids)


@dataclass(frozen=True)
class QuotaView:
    limit: int
    used: float
    reset_at: datetime


def quota_of(session: Session, visitor: dz.Visitor, now: datetime) -> QuotaView:
    return QuotaView(daily_limit(session, visitor), used_today(session, visitor.subject, now), dz.next_reset(now))


def set_defaults(session: Session, **values: int | None) -> dict[str, int]:
    for name, value in values.items():
        if value is not None and value < 0:
            raise BadRequest(f"ZeroGPU {name.replace('_', '-')} must be 0 or more seconds.")
    row = session.get(PlatformSetting, DEFAULTS_KEY)
    current = dict(row.value) if row is not None and isinstance(row.value, dict) else {}
    current.update({k: v for k, v in values.items() if v is not None})
    if row is None:
        session.add(PlatformSetting(key=DEFAULTS_KEY, value=current))
    else:
        row.value = current
    session.flush()
    return {"anonymous": policy(session).anonymous, "signed_in": policy(session).signed_in,
            "max_duration": policy(session).max_duration}


def set_quota(session: Session, account_name: str, seconds: int | None) -> None:
    """A user's or an organization's GPU seconds per day; None removes the override."""
    account = session.scalar(select(Account).where(Account.name == account_name))
    if account is None:
        raise NotFound(f"No user or organization named {account_name!r}.")
    row = session.scalar(select(ZeroGpuQuota).where(ZeroGpuQuota.account_id == account.id))
    if seconds is None:
        if row is not None:
            session.delete(row)
        return
    if seconds < 0:
        raise BadRequest("A ZeroGPU quota is a number of GPU seconds per day, 0 or more.")
    if row is None:
        session.add(ZeroGpuQuota(account_id=account.id, seconds_per_day=seconds))
    else:
        row.seconds_per_day = seconds


def add_device(session: Session, catalog: Catalog, accelerator: str, index: int, uuid: str, node: str = "local") -> None:
    if accelerator not in catalog.accelerators or catalog.accelerators[accelerator].vendor != "nvidia":
        known = ", ".join(n for n, a in catalog.accelerators.items() if a.vendor == "nvidia")
        raise BadRequest(f"ZeroGPU pools are NVIDIA only (the `spaces` package is CUDA-only); use one of: {known}.")
    if index < 0 or not uuid.strip():
        raise BadRequest("Give the device's index (nvidia-smi's, 0 or more) and its UUID (nvidia-smi -L: GPU-...).")
    if session.scalar(select(ZeroGpuDevice).where(ZeroGpuDevice.uuid == uuid)) is not None:
        raise BadRequest(f"A ZeroGPU device with UUID {uuid} is already in the pool.")
    dedicated = quotas.inventory(session).get(accelerator, [])
    if str(index) in dedicated:
        raise BadRequest(f"{accelerator} device {index} is in the dedicated inventory (`spaceport accelerators`); "
                         "a GPU is either dedicated to spaces or in the ZeroGPU pool, not both.")
    session.add(ZeroGpuDevice(accelerator=accelerator, device_index=index, uuid=uuid.strip(), node=node))
    session.flush()


def devices(session: Session) -> list[dz.Device]:
    rows = session.scalars(select(ZeroGpuDevice).order_by(ZeroGpuDevice.accelerator, ZeroGpuDevice.device_index))
    return [dz.Device(r.accelerator, r.device_index, r.uuid) for r in rows]


# ---- the admin page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRow:
    accelerator: str
    index: int
    uuid: str
    node: str
    holder: str | None  # the space holding it now (a lease not yet released), if any
    since: datetime | None


@dataclass(frozen=True)
class UsageRow:
    subject: str  # a user's name, "anonymous <address>" or "space <owner/name>" (no valid X-IP-Token)
    calls: int
    used: float
    limit: int


@dataclass(frozen=True)
class LeaseRow:
    space: str
    device_uuid: str
    subject: str
    duration: int
    charged: float
    outcome: str
    granted_at: datetime


@dataclass(frozen=True)
class Overview:
    policy: dz.QuotaPolicy
    overrides: list[tuple[str, str, int]]  # (account, "user" | "org", seconds per day)
    devices: list[DeviceRow]
    usage: list[UsageRow]  # today (UTC), most used first
    recent: list[LeaseRow]


def overview(session: Session, now: datetime, recent: int = 20) -> Overview:
    """Everything the admin page shows: defaults and overrides, the pool and who holds what, today's usage."""
    rules = policy(session)
    names = dict(session.execute(select(Account.id, Account.name)).tuples().all())
    spaces = {sp.id: sp.space_id for sp in session.scalars(select(Space).where(Space.id.in_(select(ZeroGpuLease.space_id))))}
    kinds = dict(session.execute(select(Account.id, Account.kind)).tuples().all())
    overrides = sorted((names.get(a, "?"), "org" if kinds.get(a) == "org" else "user", sec)
                       for a, sec in {**rules.users, **rules.orgs}.items())
    held = {row.device_uuid: row for row in session.scalars(select(ZeroGpuLease).where(ZeroGpuLease.released_at.is_(None)))}
    devices = [DeviceRow(r.accelerator, r.device_index, r.uuid, r.node,
                         spaces.get(held[r.uuid].space_id or 0) if r.uuid in held else None,
                         held[r.uuid].granted_at if r.uuid in held else None)
               for r in session.scalars(select(ZeroGpuDevice).order_by(ZeroGpuDevice.accelerator, ZeroGpuDevice.device_index))]
    today = session.execute(select(ZeroGpuLease.subject, ZeroGpuLease.user_id, func.count(), func.sum(ZeroGpuLease.charged_seconds))
                            .where(ZeroGpuLease.granted_at >= dz.day_start(now)).group_by(ZeroGpuLease.subject, ZeroGpuLease.user_id))
    usage = sorted((UsageRow(_who(subject, names), int(calls), float(used or 0.0),
                             daily_limit(session, dz.Visitor(subject, user_id))) for subject, user_id, calls, used in today),
                   key=lambda u: (-u.used, u.subject))
    rows = session.scalars(select(ZeroGpuLease).order_by(ZeroGpuLease.id.desc()).limit(recent))
    leases = [LeaseRow(spaces.get(r.space_id or 0, "?"), r.device_uuid, _who(r.subject, names), r.duration,
                       r.charged_seconds, r.outcome, r.granted_at) for r in rows]
    return Overview(rules, overrides, devices, usage, leases)


def _who(subject: str, names: dict[int, str]) -> str:
    kind, _, rest = subject.partition(":")
    if kind == "user" and rest.isdigit():
        return names.get(int(rest), subject)
    return f"anonymous {rest}" if kind == "ip" else f"space {rest}" if kind == "space" else subject


# ---- the calling instance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    instance: str
    space_pk: int
    space_id: str
    flavor: HardwareFlavor


def _caller(session: Session, platform: Platform, instance: str) -> Caller | None:
    row = session.scalar(select(Instance).where(Instance.name == instance))
    if row is None or row.state not in LIVE_STATES:
        return None
    space = session.get(Space, row.space_id)
    if space is None:
        return None
    flavor = quotas.catalog(platform).flavors.get(space.requested_hardware)
    if flavor is None or flavor.zero_gpu is None:
        return None
    return Caller(instance, space.id, space.space_id, flavor)


def host_pid(supervisor: int | None, ns_pid: int) -> tuple[int, int] | None:
    """The host pid (and start time) of the process the app's own PID namespace calls `ns_pid`, searched
    only among the descendants of the instance's supervisor: a pid of another instance never matches."""
    if supervisor is None or ns_pid <= 1:
        return None
    for pid in procs.descendants(supervisor):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        line = next((x for x in status.splitlines() if x.startswith("NSpid:")), "")
        if line.split()[-1:] == [str(ns_pid)]:
            started = procs.start_time(pid)
            if started is not None:
                return pid, started
    return None


def _kill(pid: int, started: int, sig: int = signal.SIGKILL) -> None:
    if procs.is_alive(pid, started):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ---- outcomes the API turns into the package's HTTP shapes ----------------------------------------------


@dataclass(frozen=True)
class Granted:
    lease: dz.Lease


@dataclass(frozen=True)
class Refused:
    approval: dz.Approval
    auth: dz.AuthLevel | None


@dataclass(frozen=True)
class Queued:
    future: asyncio.Future[dz.Lease]
    request: dz.Request


Unavailable = Literal["no-device"]


@dataclass
class ZeroGpu:
    """The device API's state and use cases for one serving process."""

    platform: Platform
    supervisor_pid: Callable[[str], int | None] = field(default=lambda _name: None)
    clock: Callable[[], float] = time.time
    kill: Callable[[int, int], None] = _kill
    resolve_pid: Callable[[int | None, int], tuple[int, int] | None] = host_pid

    def __post_init__(self) -> None:
        self.pools: dict[str, dz.Pool] = {}
        self.futures: dict[int, asyncio.Future[dz.Lease]] = {}
        self.queued: dict[int, dz.Visitor] = {}  # request seq -> whose quota pays once granted
        self.workers: dict[str, tuple[str, int, int]] = {}  # device uuid -> (instance, host pid, start time)
        self.seq = 0
        self.events: list[tuple[str, str, dict[str, Any]]] = []  # (call, instance, details): for tests and bench
        self._reaper: asyncio.Task[None] | None = None
        self._callers: dict[str, tuple[float, Caller]] = {}  # capability -> (valid until, caller)
        self.tasks: set[asyncio.Future[None]] = set()

    # -- lookups
    def caller(self, capability: str) -> Caller | None:
        instance = dz.capability_instance(self.platform.settings.key, capability)
        if instance is None:
            return None
        with self.platform.sessions() as session:
            return _caller(session, self.platform, instance)

    async def acaller(self, capability: str) -> Caller | None:
        """`caller`, remembered for CALLER_TTL seconds once found: a call's /schedule, /allow and /release
        (and a reused worker's next call) look the instance up once. Only MAC-checked capabilities of live
        instances are kept, and forget() drops an instance's at once."""
        now = time.monotonic()
        cached = self._callers.get(capability)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await run_in_threadpool(self.caller, capability)
        if found is not None:
            if len(self._callers) >= CALLER_CACHE:
                self._callers.clear()
            self._callers[capability] = (now + CALLER_TTL, found)
        else:
            self._callers.pop(capability, None)
        return found

    def pool(self, accelerator: str) -> dz.Pool:
        with self.platform.sessions() as session:
            found = tuple(d for d in devices(session) if d.accelerator == accelerator)
        pool = self.pools.get(accelerator)
        if pool is None:
            pool = self.pools[accelerator] = dz.Pool(found)
        pool.devices = found  # the admin may add or remove devices at any time; leases keep theirs
        return pool

    def visitor(self, caller: Caller, token: str | None) -> dz.Visitor:
        """Whose quota pays: the visitor the proxy vouched for, else the space itself (no or a bad token)."""
        settings = self.platform.settings
        found = dz.verify_visitor_token(settings.key, settings.public_url, caller.space_id, token, self.clock()) if token else None
        return found or dz.Visitor(f"space:{caller.space_id.lower()}", None)

    # -- /schedule
    async def schedule(self, caller: Caller, token: str | None, duration: int | None, enable_queue: bool,
                       ) -> Granted | Refused | Queued | Unavailable:
        visitor = self.visitor(caller, token)
        wanted = DEFAULT_DURATION if duration is None else duration
        approval, limit_used = await run_in_threadpool(self._approve, visitor, wanted, self._pending(visitor.subject))
        auth: dz.AuthLevel | None = "regular" if visitor.user_id is not None else None
        if approval.result != "approved":
            self._event("schedule", caller, result=approval.result, duration=wanted, subject=visitor.subject)
            return Refused(approval, auth)
        accelerator = caller.flavor.zero_gpu or ""
        pool = await run_in_threadpool(self.pool, accelerator)
        self.seq += 1
        request = dz.Request(caller.instance, caller.space_id, accelerator, visitor.subject, wanted,
                             remaining=limit_used, seq=self.seq, space_pk=caller.space_pk)
        self._event("schedule", caller, result="approved", duration=wanted, subject=visitor.subject)
        if not pool.devices:
            return "no-device"
        if not pool.waiting and pool.free():
            return Granted(await self._grant(pool, request, visitor))
        if not enable_queue or sum(r.instance == caller.instance for r in pool.waiting) >= MAX_QUEUED_PER_INSTANCE:
            return "no-device"
        future: asyncio.Future[dz.Lease] = asyncio.get_running_loop().create_future()
        self.futures[request.seq] = future
        pool.waiting.append(request)
        self.queued[request.seq] = visitor
        return Queued(future, request)

    def _pending(self, subject: str) -> int:
        """Seconds `subject` may still spend: its leases' and its queued calls' durations (read on the loop)."""
        held = [lease.request for pool in self.pools.values() for lease in pool.leases.values()]
        queued = [request for pool in self.pools.values() for request in pool.waiting]
        return sum(request.duration for request in [*held, *queued] if request.subject == subject)

    def _approve(self, visitor: dz.Visitor, duration: int, pending: int) -> tuple[dz.Approval, float]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        with self.platform.sessions() as session:
            limit, used = daily_limit(session, visitor), used_today(session, visitor.subject, now)
            approval = dz.approve(duration, limit, used + pending, policy(session).max_duration, now)
        return approval, float(approval.left)

    async def _grant(self, pool: dz.Pool, request: dz.Request, visitor: dz.Visitor) -> dz.Lease:
        lease = self._take(pool, request)
        await run_in_threadpool(self._record_grant, lease, visitor)
        return lease

    def _take(self, pool: dz.Pool, request: dz.Request) -> dz.Lease:
        granted = pool.grant(request, secrets.token_urlsafe(24), self.clock())
        assert granted is not None
        lease, evict = granted
        if evict is not None:
            self._evict(lease.device.uuid)
        self._ensure_reaper()
        return lease

    def _evict(self, uuid: str) -> None:
        """The device goes to another instance: the previous instance's idle worker on it is killed."""
        held = self.workers.pop(uuid, None)
        if held is not None:
            self.kill(held[1], held[2])

    def _record_grant(self, lease: dz.Lease, visitor: dz.Visitor) -> None:
        with self.platform.tx() as session:
            session.add(ZeroGpuLease(token_hash=_hash(lease.token), space_id=lease.request.space_pk, instance=lease.request.instance,
                                     device_uuid=lease.device.uuid, subject=visitor.subject, user_id=visitor.user_id,
                                     duration=lease.request.duration, granted_at=_dt(lease.granted_at)))

    def dispatch(self, pool: dz.Pool) -> None:
        """Serve the queue: the best waiting request gets each free device."""
        while pool.free() and (request := pool.next_waiting()) is not None:
            pool.waiting.remove(request)
            future = self.futures.pop(request.seq, None)
            visitor = self.queued.pop(request.seq, dz.Visitor(request.subject, None))
            if future is None or future.done():
                continue
            lease = self._take(pool, request)
            task = asyncio.ensure_future(self._hand_over(lease, visitor, future))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _hand_over(self, lease: dz.Lease, visitor: dz.Visitor, future: asyncio.Future[dz.Lease]) -> None:
        """Record a lease granted from the queue, then wake its /schedule stream (or give it back)."""
        await run_in_threadpool(self._record_grant, lease, visitor)
        if future.done():  # the caller left meanwhile
            await self._end(lease, "failed")
        else:
            future.set_result(lease)

    def give_up(self, request: dz.Request) -> None:
        """A queued call timed out or its connection closed."""
        for pool in self.pools.values():
            if request in pool.waiting:
                pool.waiting.remove(request)
        self.futures.pop(request.seq, None)
        self.queued.pop(request.seq, None)

    # -- /allow, /release
    async def allow(self, caller: Caller, token: str, pid: int) -> bool:
        lease = self._lease(caller, token)
        if lease is None or pid <= 1:
            return False
        found = self.resolve_pid(await run_in_threadpool(self.supervisor_pid, caller.instance), pid)
        if found is None:
            self._event("allow", caller, pid=pid, refused="pid is not a process of this instance")
            return False
        pool = self.pools[lease.request.accelerator]
        pool.allow(token, pid, self.clock())
        self.workers[lease.device.uuid] = (caller.instance, found[0], found[1])
        await run_in_threadpool(self._record, token, allowed_at=_dt(self.clock()), pid=pid)
        self._event("allow", caller, pid=pid, host_pid=found[0], device=lease.device.uuid)
        return True

    async def release(self, caller: Caller, token: str, fail: bool) -> bool:
        lease = self._lease(caller, token)
        if lease is None:
            return False
        await self._end(lease, "failed" if fail else "released")
        self._event("release", caller, fail=fail, duration=lease.request.duration)
        return True

    async def _end(self, lease: dz.Lease, outcome: str) -> float:
        pool = self.pools[lease.request.accelerator]
        pool.release(lease.token)
        now = self.clock()
        charged = lease.charged(now)
        await run_in_threadpool(self._record, lease.token, released_at=_dt(now), charged_seconds=charged, outcome=outcome)
        self.dispatch(pool)
        return charged

    def _lease(self, caller: Caller, token: str) -> dz.Lease | None:
        """The lease of `token`, only if it was granted to this very instance."""
        for pool in self.pools.values():
            lease = pool.leases.get(token)
            if lease is not None and lease.request.instance == caller.instance:
                return lease
        return None

    def _record(self, token: str, **values: Any) -> None:
        with self.platform.tx() as session:
            row = session.scalar(select(ZeroGpuLease).where(ZeroGpuLease.token_hash == _hash(token)))
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)

    # -- deadlines
    async def expire(self) -> list[dz.Lease]:
        """Leases past their duration (+ grace): kill their worker, charge the full duration."""
        now = self.clock()
        ended = [lease for pool in self.pools.values() for lease in pool.expired(now)]
        for lease in ended:
            held = self.workers.pop(lease.device.uuid, None)
            if held is not None and held[0] == lease.request.instance:
                self.kill(held[1], held[2])
            await self._end(lease, "expired")
            log.warning("ZeroGPU: %s's call on %s ran past %ss; its worker was killed",
                        lease.request.space_id, lease.device.uuid, lease.request.duration)
        return ended

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Once a second while the pools hold anything: deadlines, then instances that went away."""
        while self.known_instances():
            await asyncio.sleep(1.0)
            try:
                await self.expire()
                await self.sweep()
            except Exception:  # a database hiccup must not stop the deadlines
                log.exception("ZeroGPU: expiring leases failed")

    # -- instances that went away
    def known_instances(self) -> set[str]:
        found = {who for who, _pid, _start in self.workers.values()}
        for pool in self.pools.values():
            found |= {lease.request.instance for lease in pool.leases.values()}
            found |= {request.instance for request in pool.waiting} | set(pool.resident.values())
        return found

    def _running(self, names: set[str]) -> set[str]:
        with self.platform.sessions() as session:
            rows = session.execute(select(Instance.name, Instance.state).where(Instance.name.in_(names)))
            return {name for name, state in rows if state in RUNNING_STATES}

    async def sweep(self) -> list[str]:
        """Forget every instance the pools know that no longer runs (stopped, asleep, crashed, removed)."""
        known = self.known_instances()
        gone = sorted(known - await run_in_threadpool(self._running, known)) if known else []
        for name in gone:
            await self.forget(name)
        return gone

    async def forget(self, instance: str) -> None:
        """`instance` stopped, slept (a frozen worker would keep its GPU memory), crashed or was removed:
        its queued calls are dropped, its workers killed (the runtime's stop kills them too: this is the
        fence when it did not), its leases end charged what was used, and no device is resident to it."""
        self._callers = {cap: held for cap, held in self._callers.items() if held[1].instance != instance}
        for uuid, (who, pid, started) in list(self.workers.items()):
            if who == instance:
                del self.workers[uuid]
                self.kill(pid, started)
        for pool in self.pools.values():
            for request in [r for r in pool.waiting if r.instance == instance]:
                future = self.futures.get(request.seq)
                self.give_up(request)
                if future is not None and not future.done():
                    future.cancel()
            pool.forget(instance)
            for lease in [lease for lease in pool.leases.values() if lease.request.instance == instance]:
                await self._end(lease, "stopped")
        self._event_name("forget", instance)

    def queue_size(self, caller: Caller) -> int:
        pool = self.pools.get(caller.flavor.zero_gpu or "")
        return len(pool.waiting) if pool else 0

    def _event(self, call: str, caller: Caller, **details: Any) -> None:
        self._event_name(call, caller.instance, **details)

    def _event_name(self, call: str, instance: str, **details: Any) -> None:
        self.events.append((call, instance, details))
        del self.events[:-1000]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
