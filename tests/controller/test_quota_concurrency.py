"""Concurrent allocations never over-allocate accelerators, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from controller.db.models import AcceleratorDevice, Space
from controller.domain.errors import CapacityExhausted, QuotaExceeded
from controller.services import accounts, quotas, spaces
from controller.services.platform import Platform


@pytest.fixture
def platform(db_platform: Platform) -> Platform:
    return db_platform


def _setup(platform: Platform, tmp_path: Path, owners: int, per_owner: int) -> list[int]:
    ids = []
    with platform.tx() as session:
        quotas.add_devices(session, platform, "nvidia-t4", 3)
        for o in range(owners):
            user = accounts.create_user(session, f"user{o}")
            quotas.set_quota(session, platform, user.name, "nvidia-t4", 2)
            for s in range(per_owner):
                space = spaces.create_space(session, tmp_path / "repos", accounts.Principal(user, "write"),
                                            user.name, f"s{s}", hardware="t4-small")
                ids.append(space.id)
    return ids


def _try_allocate(platform: Platform, space_id: int) -> str:
    for _ in range(50):  # SQLite may report a busy database under contention: retry like the reconciler does
        try:
            with platform.tx() as session:
                space = session.get(Space, space_id)
                assert space is not None
                quotas.ensure_allocation(session, platform, space)
                return "ok"
        except (QuotaExceeded, CapacityExhausted) as exc:
            return type(exc).__name__
        except OperationalError:
            continue
    return "busy"


def test_concurrent_allocations_respect_capacity_and_quota(platform: Platform, tmp_path: Path) -> None:
    ids = _setup(platform, tmp_path, owners=3, per_owner=3)
    with ThreadPoolExecutor(max_workers=9) as pool:
        outcomes = list(pool.map(lambda i: _try_allocate(platform, i), ids))
    assert outcomes.count("ok") == 3, outcomes
    assert "busy" not in outcomes
    with platform.sessions() as session:
        held = session.execute(select(AcceleratorDevice.device_id, Space.owner_id)
                               .join(Space, AcceleratorDevice.space_id == Space.id)).all()
    assert sorted(d for d, _ in held) == ["0", "1", "2"]  # every device once, none twice
    per_owner: dict[int, int] = {}
    for _, owner in held:
        per_owner[owner] = per_owner.get(owner, 0) + 1
    assert max(per_owner.values()) <= 2  # nobody above their quota


def test_refusals_name_the_quota_and_the_holders(platform: Platform, tmp_path: Path) -> None:
    ids = _setup(platform, tmp_path, owners=2, per_owner=3)
    assert [_try_allocate(platform, i) for i in ids[:3]] == ["ok", "ok", "QuotaExceeded"]
    with platform.sessions() as session:
        space = session.get(Space, ids[2])
        assert space is not None
        with pytest.raises(QuotaExceeded, match=r"user0's quota for nvidia-t4 is 2 devices.*user0/s0.*user0/s1"):
            quotas.check_request(session, platform, space, "t4-small")
    assert _try_allocate(platform, ids[3]) == "ok"
    with platform.sessions() as session:
        space = session.get(Space, ids[4])
        assert space is not None
        with pytest.raises(CapacityExhausted, match=r"no free nvidia-t4: 3 of 3 held by .*user0/s0.*user1/s0"):
            quotas.check_request(session, platform, space, "t4-small")
