"""ZeroGPU, pure parts: per-call device leases, their queue, daily GPU-second quotas, signed visitor tokens.

The `spaces` package (PyPI) asks a device API for a GPU per decorated call (`POST /schedule`), its forked
worker confirms with its pid (`/allow`) and the main process gives it back (`/release`). This module
decides, with the time passed in: who gets which device, in which order the queue is served, what a
call may cost, and what it is charged. controller/services/zerogpu.py adds the database, the clock and
the kills; controller/api/zerogpu.py the HTTP shape the package expects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from controller.domain import hs256

ApproveResult = Literal["approved", "quota-exceeded", "illegal-duration"]
AuthLevel = Literal["regular", "pro"]
GRACE_SECONDS = 5  # past its duration, a lease gets this long before its worker is killed
TOKEN_TTL = 600  # seconds an X-IP-Token minted by the proxy is accepted
ANONYMOUS_PREFIX = "ip:"
USER_PREFIX = "user:"
LISTENER_PORTS = (20000, 30000)  # below Linux's ephemeral range (32768-60999)


# ---- devices and leases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One GPU of a ZeroGPU pool (`accelerator` is the catalog type, e.g. nvidia-a10g)."""

    accelerator: str
    index: int
    uuid: str


@dataclass(frozen=True)
class Request:
    """One /schedule call, already authenticated: which instance, for whom, how long."""

    instance: str  # the calling instance's name
    space_id: str
    accelerator: str
    subject: str  # "user:<id>" or "ip:<address>": whose quota pays
    duration: int  # seconds asked for
    remaining: float  # the subject's quota left when it asked (priority)
    seq: int = 0  # arrival order, ties broken first come first served
    space_pk: int | None = None  # the space's database id (for the lease record)


@dataclass(frozen=True)
class Lease:
    token: str
    request: Request
    device: Device
    granted_at: float  # epoch seconds
    idle: bool  # the instance's previous worker on this device may be reused
    allowed_at: float | None = None
    pid: int | None = None  # the worker pid, as the app's namespace sees it

    @property
    def deadline(self) -> float:
        return self.granted_at + self.request.duration + GRACE_SECONDS

    def charged(self, released_at: float) -> float:
        """Seconds actually used: from the worker's /allow (or the grant, for a reused worker) to release,
        never more than the duration asked for."""
        start = self.allowed_at if self.allowed_at is not None else self.granted_at
        return max(0.0, min(released_at - start, float(self.request.duration)))


def priority(request: Request) -> tuple[int, float, int]:
    """Queue order: shorter calls first, then callers with more quota left, then arrival."""
    return (request.duration, -request.remaining, request.seq)


@dataclass
class Pool:
    """The devices of one accelerator type, who holds which, and who waits (in memory, one per type).

    `resident` remembers which instance last ran a worker on a device: a new lease on the same device
    for the same instance is `idle` (the package reuses its forked worker); for another instance it is
    not, and the previous instance's worker must be killed before the device changes hands."""

    devices: tuple[Device, ...]
    leases: dict[str, Lease] = field(default_factory=dict)  # token -> lease
    waiting: list[Request] = field(default_factory=list)
    resident: dict[str, str] = field(default_factory=dict)  # device uuid -> instance

    def free(self) -> list[Device]:
        busy = {lease.device.uuid for lease in self.leases.values()}
        return [d for d in self.devices if d.uuid not in busy]

    def pick(self, instance: str) -> Device | None:
        """A free device, preferring one where this instance's worker already lives."""
        free = self.free()
        mine = [d for d in free if self.resident.get(d.uuid) == instance]
        unclaimed = [d for d in free if d.uuid not in self.resident]
        for choice in (mine, unclaimed, free):
            if choice:
                return choice[0]
        return None

    def grant(self, request: Request, token: str, now: float) -> tuple[Lease, str | None] | None:
        """Lease a free device to `request`; also returns the instance whose resident worker to evict."""
        device = self.pick(request.instance)
        if device is None:
            return None
        previous = self.resident.get(device.uuid)
        lease = Lease(token, request, device, now, idle=previous == request.instance)
        self.leases[token] = lease
        self.resident[device.uuid] = request.instance
        evict = previous if previous not in (None, request.instance) else None
        return lease, evict

    def next_waiting(self) -> Request | None:
        return min(self.waiting, key=priority) if self.waiting else None

    def allow(self, token: str, pid: int, now: float) -> Lease | None:
        lease = self.leases.get(token)
        if lease is None:
            return None
        lease = replace(lease, allowed_at=now, pid=pid)
        self.leases[token] = lease
        return lease

    def release(self, token: str) -> Lease | None:
        return self.leases.pop(token, None)

    def expired(self, now: float) -> list[Lease]:
        return [lease for lease in self.leases.values() if now >= lease.deadline]

    def forget(self, instance: str) -> None:
        """An instance stopped: its workers are gone with it."""
        self.resident = {uuid: who for uuid, who in self.resident.items() if who != instance}


# ---- quotas ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaPolicy:
    """GPU seconds per day: defaults for anonymous visitors and signed-in users, the most one call may
    ask for, and the admin's overrides per user and per organization (account id -> seconds)."""

    anonymous: int = 60
    signed_in: int = 300
    max_duration: int = 120
    users: Mapping[int, int] = field(default_factory=dict)
    orgs: Mapping[int, int] = field(default_factory=dict)

    def daily_limit(self, user_id: int | None, org_ids: Iterable[int] = ()) -> int:
        """A user's own override, else the largest of their organizations', else the default."""
        if user_id is None:
            return self.anonymous
        if user_id in self.users:
            return self.users[user_id]
        from_orgs = [self.orgs[o] for o in org_ids if o in self.orgs]
        return max(from_orgs) if from_orgs else self.signed_in


@dataclass(frozen=True)
class Approval:
    result: ApproveResult
    left: int  # seconds of quota left (before this call)
    wait: float  # seconds until the quota resets; negative: the duration is never allowed


def next_reset(now: datetime) -> datetime:
    """Quotas are per UTC day."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def day_start(now: datetime) -> datetime:
    return next_reset(now) - timedelta(days=1)


def approve(duration: int, limit: int, used: float, max_duration: int, now: datetime) -> Approval:
    """May a call of `duration` seconds run, for a subject that used `used` of `limit` today?"""
    left = max(0, int(limit - used))
    if duration < 1 or duration > max_duration:
        return Approval("illegal-duration", left, -1.0)
    if duration > left:
        return Approval("quota-exceeded", left, (next_reset(now) - now).total_seconds())
    return Approval("approved", left, 0.0)


# ---- visitor identity (X-IP-Token) and instance capabilities ----------------------------------------


@dataclass(frozen=True)
class Visitor:
    subject: str  # "user:<id>" or "ip:<address>"
    user_id: int | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(key: str, purpose: str, message: str) -> bytes:
    return hmac.new(hashlib.sha256(f"{purpose}:{key}".encode()).digest(), message.encode(), hashlib.sha256).digest()


def sign_visitor_token(key: str, issuer: str, space_id: str, visitor: Visitor, now: float, ttl: int = TOKEN_TTL) -> str:
    """A JWT (HS256) the package decodes for display and passes back to /schedule untouched."""
    claims = {"iss": issuer, "aud": space_id.lower(), "sub": visitor.subject, "uid": visitor.user_id,
              "iat": int(now), "exp": int(now) + ttl}
    return hs256.sign(hs256.derive_secret(key, "zerogpu-visitor"), claims)


def verify_visitor_token(key: str, issuer: str, space_id: str, token: str, now: float) -> Visitor | None:
    """The visitor a token names, if this site signed it for this space and it has not expired."""
    claims = hs256.verify(hs256.derive_secret(key, "zerogpu-visitor"), token, now)
    if claims is None or claims.get("iss") != issuer or claims.get("aud") != space_id.lower():
        return None
    if not isinstance(claims.get("sub"), str):
        return None
    uid = claims.get("uid")
    return Visitor(claims["sub"], uid if isinstance(uid, int) else None)


def anonymous_visitor(address: str) -> Visitor:
    return Visitor(ANONYMOUS_PREFIX + address, None)


def user_visitor(user_id: int) -> Visitor:
    return Visitor(f"{USER_PREFIX}{user_id}", user_id)


def instance_capability(key: str, instance: str) -> str:
    """The path segment an instance's device API URL carries: its name and a MAC only the site can make."""
    return f"{instance}.{_b64(_mac(key, 'zerogpu-instance', instance))}"


def capability_instance(key: str, capability: str) -> str | None:
    """The instance a capability was made for, or None if it is not one this site made."""
    instance, _, mac = capability.rpartition(".")
    if not instance or not hmac.compare_digest(_b64(_mac(key, "zerogpu-instance", instance)), mac):
        return None
    return instance



def listener_port(key: str) -> int:
    """The port of the device API's own listener: derived from the site key, so it is stable across
    restarts (running instances keep their URL) and two sites on one machine do not collide."""
    digest = hashlib.sha256(f"zerogpu-listener:{key}".encode()).digest()
    return LISTENER_PORTS[0] + int.from_bytes(digest[:4], "big") % (LISTENER_PORTS[1] - LISTENER_PORTS[0])
