from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.domain.quotas import (
    Allocation,
    AllocationRequest,
    Holding,
    QuotaTable,
    Refusal,
    allocate,
    device_sort_key,
    inventory_from_counts,
    owner_of,
    usage,
)

T4 = "nvidia-t4"
INVENTORY = {T4: ("0", "1"), "nvidia-a10g": ("0", "1", "2", "3")}


def hold(space_id: str, *ids: str, type: str = T4) -> Holding:
    return Holding(space_id, owner_of(space_id), type, tuple(ids))


def test_default_quota_is_zero() -> None:
    result = allocate(AllocationRequest("alice/demo", T4, 1), INVENTORY, [], QuotaTable())
    assert result == Refusal(
        "quota",
        "alice's quota for nvidia-t4 is 0 devices; alice/demo asks for 1 and alice holds none. "
        "To use it, ask an admin to raise it: spaceport quota set alice nvidia-t4 1",
    )
    assert isinstance(result, Refusal) and result.http_status == 403


def test_quota_refusal_names_the_holding_and_the_fix() -> None:
    quotas = QuotaTable(limits={("alice", T4): 1})
    result = allocate(AllocationRequest("alice/new", T4, 1), INVENTORY, [hold("alice/demo", "0")], quotas)
    assert result == Refusal(
        "quota",
        "alice's quota for nvidia-t4 is 1 device; alice already holds 1 (alice/demo). Free it by pausing "
        "or sleeping a space, or ask an admin to raise it: spaceport quota set alice nvidia-t4 2",
    )


def test_capacity_refusal_names_holders() -> None:
    quotas = QuotaTable(default=4)
    holdings = [hold("carol/y", "1"), hold("bob/x", "0")]
    result = allocate(AllocationRequest("alice/demo", T4, 1), INVENTORY, holdings, quotas)
    assert result == Refusal("capacity", "no free nvidia-t4: 2 of 2 held by bob/x (1), carol/y (1)")
    assert isinstance(result, Refusal) and result.http_status == 409


def test_partial_capacity_and_oversized_and_missing_type() -> None:
    quotas = QuotaTable(default=8)
    partial = allocate(AllocationRequest("a/b", T4, 2), INVENTORY, [hold("bob/x", "0")], quotas)
    assert partial == Refusal(
        "capacity", "not enough free nvidia-t4: a/b asks for 2, 1 of 2 free; the others are held by bob/x (1)"
    )
    too_big = allocate(AllocationRequest("a/b", T4, 3), INVENTORY, [], quotas)
    assert isinstance(too_big, Refusal) and "only 2 in all" in too_big.message
    missing = allocate(AllocationRequest("a/b", "ascend-910b", 1), INVENTORY, [], quotas)
    assert isinstance(missing, Refusal) and missing.message.startswith("no ascend-910b in the inventory")


def test_lowest_free_ids_numerically() -> None:
    inventory = {T4: tuple(str(i) for i in range(12))}
    holdings = [hold("bob/x", "0", "2")]
    result = allocate(AllocationRequest("alice/a", T4, 3), inventory, holdings, QuotaTable(default=3))
    assert result == Allocation("alice/a", "alice", T4, ("1", "3", "4"))
    assert sorted(["10", "9", "x", "1"], key=device_sort_key) == ["1", "9", "10", "x"]


def test_org_spaces_count_against_the_org() -> None:
    quotas = QuotaTable(limits={("acme", T4): 1, ("alice", T4): 5})
    holdings = [hold("acme/one", "0")]
    result = allocate(AllocationRequest("acme/two", T4, 1), INVENTORY, holdings, quotas)
    assert isinstance(result, Refusal) and result.message.startswith("acme's quota")
    ok = allocate(AllocationRequest("alice/mine", T4, 1), INVENTORY, holdings, quotas)
    assert ok == Allocation("alice/mine", "alice", T4, ("1",))


def test_reallocating_own_space_replaces_its_holding() -> None:
    quotas = QuotaTable(limits={("alice", T4): 1})
    result = allocate(AllocationRequest("alice/demo", T4, 1), INVENTORY, [hold("alice/demo", "1")], quotas)
    assert result == Allocation("alice/demo", "alice", T4, ("0",))


def test_zero_count_needs_nothing() -> None:
    assert allocate(AllocationRequest("a/b", T4, 0), {}, [], QuotaTable()) == Allocation("a/b", "a", T4, ())


def test_per_type_defaults_and_usage() -> None:
    quotas = QuotaTable(defaults={T4: 1}, default=0)
    assert quotas.limit("anyone", T4) == 1
    assert quotas.limit("anyone", "nvidia-a10g") == 0
    assert usage([hold("a/x", "0"), hold("a/y", "1"), hold("b/z", "2")]) == {("a", T4): 2, ("b", T4): 1}
    assert inventory_from_counts({T4: 2}) == {T4: ("0", "1")}


OWNERS = st.sampled_from(["alice", "bob", "acme"])
TYPES = st.sampled_from([T4, "nvidia-a10g"])
REQUESTS = st.lists(
    st.tuples(OWNERS, st.integers(0, 4), TYPES, st.integers(0, 3), st.booleans()), min_size=1, max_size=25
)


@settings(max_examples=200, deadline=None)
@given(
    requests=REQUESTS,
    t4=st.integers(0, 4),
    a10g=st.integers(0, 4),
    limits=st.dictionaries(st.tuples(OWNERS, TYPES), st.integers(0, 4)),
    default=st.integers(0, 2),
)
def test_never_over_allocate_never_exceed_quota(
    requests: list[tuple[str, int, str, int, bool]],
    t4: int,
    a10g: int,
    limits: dict[tuple[str, str], int],
    default: int,
) -> None:
    inventory = inventory_from_counts({T4: t4, "nvidia-a10g": a10g})
    quotas = QuotaTable(limits=limits, default=default)
    held: dict[tuple[str, str], Holding] = {}
    for owner, n, type_, count, release in requests:
        space = f"{owner}/s{n}"
        if release:  # sleeping/pausing frees the devices
            held.pop((space, type_), None)
            continue
        result = allocate(AllocationRequest(space, type_, count), inventory, list(held.values()), quotas)
        if isinstance(result, Allocation):
            assert len(result.device_ids) == count
            held[(space, type_)] = Holding(space, owner, type_, result.device_ids)
        else:
            assert result.kind in ("quota", "capacity") and result.message
        for kind in (T4, "nvidia-a10g"):
            ids = [d for h in held.values() if h.type == kind for d in h.device_ids]
            assert len(ids) == len(set(ids)), "a device is allocated twice"
            assert set(ids) <= set(inventory[kind]), "a device outside the inventory"
        for (who, kind), used in usage(held.values()).items():
            assert used <= quotas.limit(who, kind), f"{who} exceeds quota for {kind}"


@settings(max_examples=100, deadline=None)
@given(total=st.integers(0, 8), taken=st.sets(st.integers(0, 7)), count=st.integers(1, 8))
def test_allocation_succeeds_exactly_when_enough_are_free(total: int, taken: set[int], count: int) -> None:
    inventory = inventory_from_counts({T4: total})
    holdings = [hold(f"bob/s{i}", str(i)) for i in sorted(taken) if i < total]
    free = total - len(holdings)
    result = allocate(AllocationRequest("alice/a", T4, count), inventory, holdings, QuotaTable(default=8))
    assert isinstance(result, Allocation) == (free >= count)
    if isinstance(result, Allocation):
        expected = [str(i) for i in range(total) if i not in taken][:count]
        assert list(result.device_ids) == expected
