"""Accelerator allocation: pure decisions over inventory, current holdings and quotas.

A space's devices count against the space's owner, i.e. the namespace part of `owner/name`: an org
space counts against the org, whoever deployed it. Quotas are per (owner, accelerator type); anyone
without an explicit quota gets the default, which is 0 out of the box (an admin grants devices).
Device choice is deterministic: the lowest free ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal


def owner_of(space_id: str) -> str:
    """The account a space's devices count against: `org/x` -> `org`."""
    return space_id.split("/", 1)[0]


def device_sort_key(device_id: str) -> tuple[int, int, str]:
    """Numeric ids sort numerically ("2" < "10"); others after them, by text."""
    return (0, int(device_id), "") if device_id.isdigit() else (1, 0, device_id)


def inventory_from_counts(counts: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
    """An inventory whose devices are numbered 0..n-1 per type (what a cluster reports as counts)."""
    return {kind: tuple(str(i) for i in range(n)) for kind, n in counts.items()}


@dataclass(frozen=True)
class Holding:
    """Devices a space holds now."""

    space_id: str
    owner: str
    type: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class QuotaTable:
    """Per (owner, type) limits; `defaults` per type, else `default` (0 out of the box)."""

    limits: Mapping[tuple[str, str], int] = field(default_factory=dict)
    defaults: Mapping[str, int] = field(default_factory=dict)
    default: int = 0

    def limit(self, owner: str, type: str) -> int:
        if (owner, type) in self.limits:
            return self.limits[(owner, type)]
        return self.defaults.get(type, self.default)

    def is_explicit(self, owner: str, type: str) -> bool:
        return (owner, type) in self.limits


@dataclass(frozen=True)
class AllocationRequest:
    space_id: str
    type: str
    count: int
    owner: str = ""  # defaults to owner_of(space_id)

    @property
    def account(self) -> str:
        return self.owner or owner_of(self.space_id)


@dataclass(frozen=True)
class Allocation:
    space_id: str
    owner: str
    type: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class Refusal:
    kind: Literal["quota", "capacity"]
    message: str

    @property
    def http_status(self) -> int:
        return 403 if self.kind == "quota" else 409


def allocate(
    request: AllocationRequest,
    inventory: Mapping[str, Sequence[str]],
    holdings: Iterable[Holding],
    quotas: QuotaTable,
) -> Allocation | Refusal:
    """Devices for `request`, or why not. The space's own current holding of the type is replaced."""
    owner = request.account
    if request.count <= 0:
        return Allocation(request.space_id, owner, request.type, ())
    others = [h for h in holdings if h.type == request.type and h.space_id != request.space_id]
    refusal = _check_quota(request, owner, others, quotas)
    if refusal is not None:
        return refusal
    devices = tuple(inventory.get(request.type, ()))
    held = {d for h in others for d in h.device_ids}
    free = sorted((d for d in set(devices) if d not in held), key=device_sort_key)
    if len(free) < request.count:
        return Refusal("capacity", capacity_message(request, devices, free, others))
    return Allocation(request.space_id, owner, request.type, tuple(free[: request.count]))


def usage(holdings: Iterable[Holding]) -> dict[tuple[str, str], int]:
    """Devices held per (owner, type), for the admin's usage view."""
    used: dict[tuple[str, str], int] = {}
    for h in holdings:
        used[(h.owner, h.type)] = used.get((h.owner, h.type), 0) + len(h.device_ids)
    return used


def _check_quota(
    request: AllocationRequest, owner: str, others: Sequence[Holding], quotas: QuotaTable
) -> Refusal | None:
    limit = quotas.limit(owner, request.type)
    mine = [h for h in others if h.owner == owner]
    used = sum(len(h.device_ids) for h in mine)
    if used + request.count <= limit:
        return None
    return Refusal("quota", quota_message(owner, request, limit, mine))


def _devices(n: int) -> str:
    return f"{n} device" if n == 1 else f"{n} devices"


def _holders(holdings: Sequence[Holding]) -> str:
    return ", ".join(f"{h.space_id} ({len(h.device_ids)})" for h in sorted(holdings, key=lambda h: h.space_id))


def quota_message(owner: str, request: AllocationRequest, limit: int, mine: Sequence[Holding]) -> str:
    used = sum(len(h.device_ids) for h in mine)
    head = f"{owner}'s quota for {request.type} is {_devices(limit)}"
    if request.count > 1 or not mine:
        head += f"; {request.space_id} asks for {request.count}"
    fix = f"ask an admin to raise it: spaceport quota set {owner} {request.type} {used + request.count}"
    if not mine:
        return f"{head} and {owner} holds none. To use it, {fix}"
    holders = ", ".join(h.space_id for h in sorted(mine, key=lambda h: h.space_id))
    return (
        f"{head}; {owner} already holds {used} ({holders}). "
        f"Free it by pausing or sleeping a space, or {fix}"
    )


def capacity_message(
    request: AllocationRequest, devices: Sequence[str], free: Sequence[str], others: Sequence[Holding]
) -> str:
    total = len(devices)
    if total == 0:
        return f"no {request.type} in the inventory; an admin must add {request.type} devices first"
    if request.count > total:
        return f"{request.space_id} asks for {request.count} {request.type} but there are only {total} in all"
    holders = _holders([h for h in others if h.device_ids])
    if not free:
        return f"no free {request.type}: {total} of {total} held by {holders}"
    return (
        f"not enough free {request.type}: {request.space_id} asks for {request.count}, "
        f"{len(free)} of {total} free; the others are held by {holders}"
    )
