"""Hardware flavors, accelerator inventory, quotas and allocation, over the database.

Allocation takes a per-type write lock (an UPDATE touching every device row of the type) before it
reads, so concurrent wakes and hardware requests never over-allocate, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller.db.models import AcceleratorDevice, Account, PlatformSetting, Quota, Space, utcnow
from controller.domain.errors import BadRequest, CapacityExhausted, NotFound, QuotaExceeded
from controller.domain.hardware import Catalog, HardwareFlavor, UnknownFlavor, load_catalog
from controller.domain.quotas import Allocation, AllocationRequest, Holding, QuotaTable, Refusal, allocate
from controller.services.platform import Platform


@cache
def _catalog(path: Path | None) -> Catalog:
    return load_catalog(path)


def catalog(platform: Platform) -> Catalog:
    return _catalog(platform.settings.hardware_catalog)


def flavor(platform: Platform, name: str) -> HardwareFlavor:
    try:
        return catalog(platform).flavor(name)
    except UnknownFlavor as exc:
        raise BadRequest(str(exc)) from None


def inventory(session: Session) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for device in session.scalars(select(AcceleratorDevice).order_by(AcceleratorDevice.id)):
        result.setdefault(device.accelerator, []).append(device.device_id)
    return result


def holdings(session: Session) -> list[Holding]:
    rows = session.execute(
        select(AcceleratorDevice, Space).join(Space, AcceleratorDevice.space_id == Space.id)
    ).all()
    grouped: dict[tuple[str, str], list[str]] = {}
    owners: dict[str, str] = {}
    for device, space in rows:
        grouped.setdefault((space.space_id, device.accelerator), []).append(device.device_id)
        owners[space.space_id] = space.owner.name
    return [Holding(sid, owners[sid], kind, tuple(ids)) for (sid, kind), ids in grouped.items()]


def quota_table(session: Session) -> QuotaTable:
    limits = {(owner.name, q.accelerator): q.limit for q, owner in
              session.execute(select(Quota, Account).join(Account, Quota.owner_id == Account.id)).all()}
    row = session.get(PlatformSetting, "default_quotas")
    defaults = row.value if row is not None and isinstance(row.value, dict) else {}
    return QuotaTable(limits=limits, defaults={k: int(v) for k, v in defaults.items()})


def owner_limits(platform: Platform, owner: str) -> dict[str, int]:
    """{accelerator type: limit} of one owner (explicit or default), for every type of the catalog: what
    the Kubernetes runtime mirrors into the owner namespace's ResourceQuota at each start."""
    with platform.tx() as session:
        table = quota_table(session)
    return {kind: table.limit(owner, kind) for kind in catalog(platform).accelerators}


def _lock_type(session: Session, kind: str) -> None:
    session.execute(update(AcceleratorDevice).where(AcceleratorDevice.accelerator == kind)
                    .values(accelerator=AcceleratorDevice.accelerator))


def decide(session: Session, platform: Platform, space: Space, flavor_name: str) -> Allocation | Refusal | None:
    """What allocating flavor_name's accelerators to space would give; None for CPU flavors."""
    chosen = flavor(platform, flavor_name)
    if not chosen.accelerator:
        return None
    request = AllocationRequest(space.space_id, chosen.accelerator, chosen.accelerator_count, owner=space.owner.name)
    return allocate(request, inventory(session), holdings(session), quota_table(session))


def raise_refusal(refusal: Refusal) -> None:
    if refusal.kind == "quota":
        raise QuotaExceeded(refusal.message)
    raise CapacityExhausted(refusal.message)


def ensure_allocation(session: Session, platform: Platform, space: Space) -> tuple[str | None, tuple[str, ...]]:
    """Hold the devices the space's flavor needs (at start or wake); raises QuotaExceeded/CapacityExhausted."""
    chosen = flavor(platform, space.requested_hardware)
    release_other_types(session, space, chosen.accelerator)
    if not chosen.accelerator:
        return None, ()
    _lock_type(session, chosen.accelerator)
    held = held_by(session, space, chosen.accelerator)
    if len(held) == chosen.accelerator_count:
        return chosen.accelerator, held
    outcome = decide(session, platform, space, space.requested_hardware)
    if isinstance(outcome, Refusal):
        raise_refusal(outcome)
    assert isinstance(outcome, Allocation)
    _assign(session, space, outcome)
    return outcome.type, outcome.device_ids


def held_by(session: Session, space: Space, kind: str) -> tuple[str, ...]:
    stmt = select(AcceleratorDevice.device_id).where(AcceleratorDevice.space_id == space.id,
                                                     AcceleratorDevice.accelerator == kind)
    return tuple(session.scalars(stmt))


def _assign(session: Session, space: Space, allocation: Allocation) -> None:
    session.execute(update(AcceleratorDevice).where(AcceleratorDevice.space_id == space.id)
                    .values(space_id=None, allocated_at=None))
    session.execute(
        update(AcceleratorDevice)
        .where(AcceleratorDevice.accelerator == allocation.type, AcceleratorDevice.device_id.in_(allocation.device_ids))
        .values(space_id=space.id, allocated_at=utcnow())
    )


def release_other_types(session: Session, space: Space, keep: str | None) -> None:
    stmt = update(AcceleratorDevice).where(AcceleratorDevice.space_id == space.id)
    if keep:
        stmt = stmt.where(AcceleratorDevice.accelerator != keep)
    session.execute(stmt.values(space_id=None, allocated_at=None))


def check_request(session: Session, platform: Platform, space: Space, flavor_name: str) -> None:
    """Refuse early (403 quota / 409 capacity) a hardware request that could not start."""
    chosen = flavor(platform, flavor_name)
    if chosen.accelerator:
        _lock_type(session, chosen.accelerator)
    outcome = decide(session, platform, space, flavor_name)
    if isinstance(outcome, Refusal):
        raise_refusal(outcome)


def set_quota(session: Session, platform: Platform, owner: str, kind: str, limit: int) -> Quota:
    account = session.scalar(select(Account).where(Account.name == owner))
    if account is None:
        raise NotFound(f"No user or organization named {owner!r}.")
    _check_type(platform, kind)
    if limit < 0:
        raise BadRequest("A quota is a number of devices, 0 or more.")
    row = session.scalar(select(Quota).where(Quota.owner_id == account.id, Quota.accelerator == kind))
    if row is None:
        row = Quota(owner_id=account.id, accelerator=kind, limit=limit)
        session.add(row)
    row.limit = limit
    session.flush()
    return row


def _check_type(platform: Platform, kind: str) -> None:
    known = catalog(platform).accelerators
    if kind not in known:
        raise BadRequest(f"Unknown accelerator type {kind!r}. Known types: {', '.join(known)}.")


def add_devices(session: Session, platform: Platform, kind: str, count: int, node: str = "local") -> list[str]:
    """Declare count more devices of a type (ids continue from the highest existing one)."""
    _check_type(platform, kind)
    if count < 1:
        raise BadRequest("Add at least one device.")
    existing = [d for d in inventory(session).get(kind, []) if d.isdigit()]
    start = max((int(d) for d in existing), default=-1) + 1
    ids = [str(start + i) for i in range(count)]
    session.add_all(AcceleratorDevice(accelerator=kind, device_id=i, node=node) for i in ids)
    session.flush()
    return ids


@dataclass(frozen=True)
class QuotaRow:
    owner: str
    accelerator: str
    limit: int
    used: int


def list_quotas(session: Session) -> list[QuotaRow]:
    table = quota_table(session)
    used: dict[tuple[str, str], int] = {}
    for h in holdings(session):
        used[(h.owner, h.type)] = used.get((h.owner, h.type), 0) + len(h.device_ids)
    keys = sorted(set(table.limits) | set(used))
    return [QuotaRow(o, t, table.limit(o, t), used.get((o, t), 0)) for o, t in keys]


@dataclass(frozen=True)
class DeviceRow:
    accelerator: str
    device_id: str
    node: str
    holder: str | None


def device_rows(session: Session) -> list[DeviceRow]:
    rows = session.execute(
        select(AcceleratorDevice, Space).outerjoin(Space, AcceleratorDevice.space_id == Space.id)
        .order_by(AcceleratorDevice.accelerator, AcceleratorDevice.id)
    ).all()
    return [DeviceRow(d.accelerator, d.device_id, d.node, s.space_id if s else None) for d, s in rows]


@dataclass(frozen=True)
class FlavorOption:
    name: str
    pretty_name: str
    accelerator: str | None
    quota: int | None
    used: int
    free: int | None
    allowed: bool
    reason: str


def flavor_options(session: Session, platform: Platform, owner: Account, space: Space | None = None) -> list[FlavorOption]:
    """Every flavor with the owner's quota, use and free capacity, for pickers."""
    table, inv, held = quota_table(session), inventory(session), holdings(session)
    options = []
    for f in catalog(platform).flavors.values():
        if not f.accelerator:
            options.append(FlavorOption(f.name, f.pretty_name or f.name, None, None, 0, None, True, ""))
            continue
        used = sum(len(h.device_ids) for h in held if h.owner == owner.name and h.type == f.accelerator
                   and (space is None or h.space_id != space.space_id))
        taken = {d for h in held if h.type == f.accelerator and (space is None or h.space_id != space.space_id) for d in h.device_ids}
        free = len([d for d in inv.get(f.accelerator, []) if d not in taken])
        sid = space.space_id if space else f"{owner.name}/new"
        outcome = allocate(AllocationRequest(sid, f.accelerator, f.accelerator_count, owner=owner.name), inv,
                           [h for h in held if space is None or h.space_id != space.space_id], table)
        reason = outcome.message if isinstance(outcome, Refusal) else ""
        options.append(FlavorOption(f.name, f.pretty_name or f.name, f.accelerator, table.limit(owner.name, f.accelerator),
                                    used, free, not reason, reason))
    return options
