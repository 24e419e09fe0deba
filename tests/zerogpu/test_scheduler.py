"""ZeroGPU's pure parts: the pool (grants, reuse, eviction, deadlines), queue order, quota math, tokens."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from controller.domain import zerogpu as dz

A10G = (dz.Device("nvidia-a10g", 0, "GPU-aaaa"), dz.Device("nvidia-a10g", 1, "GPU-bbbb"))
KEY = "site-key"
SITE = "http://spaceport.example"


def request(instance: str = "sp-a-1-1", duration: int = 10, remaining: float = 100, seq: int = 0) -> dz.Request:
    return dz.Request(instance, "alice/a", "nvidia-a10g", "user:1", duration, remaining, seq)


def test_grant_takes_free_devices_then_none_is_left() -> None:
    pool = dz.Pool(A10G)
    first = pool.grant(request(), "t1", now=0)
    second = pool.grant(request("sp-b-1-1"), "t2", now=0)
    assert first is not None and second is not None
    assert {first[0].device.uuid, second[0].device.uuid} == {"GPU-aaaa", "GPU-bbbb"}
    assert pool.grant(request(), "t3", now=0) is None
    assert pool.release("t1") is not None and len(pool.free()) == 1


def test_same_instance_reuses_its_device_and_worker_another_evicts_it() -> None:
    pool = dz.Pool(A10G[:1])
    lease, evict = pool.grant(request("sp-a-1-1"), "t1", now=0) or (None, None)
    assert lease is not None and not lease.idle and evict is None  # first call: the package forks a worker
    pool.release("t1")
    again, evict = pool.grant(request("sp-a-1-1"), "t2", now=1) or (None, None)
    assert again is not None and again.idle and evict is None  # the worker on this device is reused
    pool.release("t2")
    other, evict = pool.grant(request("sp-b-1-1"), "t3", now=2) or (None, None)
    assert other is not None and not other.idle and evict == "sp-a-1-1"  # a's worker must go first


def test_pick_prefers_the_device_where_the_instance_already_has_a_worker() -> None:
    pool = dz.Pool(A10G)
    pool.resident = {"GPU-bbbb": "sp-a-1-1"}
    assert pool.pick("sp-a-1-1") == A10G[1]
    assert pool.pick("sp-c-1-1") == A10G[0]  # an unclaimed device before someone else's


def test_deadline_is_duration_plus_grace_and_charge_is_what_was_used() -> None:
    pool = dz.Pool(A10G[:1])
    lease, _ = pool.grant(request(duration=5), "t1", now=100) or (None, None)
    assert lease is not None and lease.deadline == 100 + 5 + dz.GRACE_SECONDS
    assert pool.expired(104) == [] and pool.expired(110) == [pool.leases["t1"]]
    allowed = pool.allow("t1", pid=42, now=101.5)
    assert allowed is not None and allowed.pid == 42
    assert allowed.charged(103.0) == 1.5  # allow -> release, not grant -> release
    assert allowed.charged(500.0) == 5  # never more than asked for
    assert lease.charged(99.0) == 0.0  # a reused worker (no /allow) is charged from the grant
    assert pool.allow("nope", pid=1, now=0) is None


def test_queue_serves_shorter_calls_first_then_more_quota_left_then_arrival() -> None:
    pool = dz.Pool(A10G[:1])
    pool.waiting = [request(duration=30, seq=1), request(duration=5, remaining=10, seq=2),
                    request(duration=5, remaining=200, seq=3), request(duration=5, remaining=200, seq=4)]
    order = []
    while (nxt := pool.next_waiting()) is not None:
        order.append(nxt.seq)
        pool.waiting.remove(nxt)
    assert order == [3, 4, 2, 1]


def test_daily_limit_user_override_then_best_org_then_default() -> None:
    policy = dz.QuotaPolicy(anonymous=30, signed_in=300, users={1: 1000}, orgs={10: 600, 11: 900})
    assert policy.daily_limit(None) == 30
    assert policy.daily_limit(2) == 300
    assert policy.daily_limit(1, [10]) == 1000
    assert policy.daily_limit(2, [10, 11]) == 900


def test_approve_quota_duration_and_reset() -> None:
    now = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
    assert dz.approve(5, limit=300, used=100, max_duration=120, now=now) == dz.Approval("approved", 200, 0.0)
    refused = dz.approve(5, limit=300, used=297.5, max_duration=120, now=now)
    assert refused.result == "quota-exceeded" and refused.left == 2 and refused.wait == 3600.0
    assert dz.approve(121, 300, 0, 120, now).result == "illegal-duration"
    assert dz.approve(0, 300, 0, 120, now).wait < 0 and dz.approve(-5, 300, 0, 120, now).result == "illegal-duration"
    assert dz.approve(5, limit=0, used=0, max_duration=120, now=now).result == "quota-exceeded"
    assert dz.day_start(now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert dz.next_reset(now) - dz.day_start(now) == timedelta(days=1)


def test_visitor_token_is_bound_to_site_key_space_and_expiry() -> None:
    token = dz.sign_visitor_token(KEY, SITE, "alice/a", dz.user_visitor(7), now=1000)
    assert dz.verify_visitor_token(KEY, SITE, "alice/a", token, now=1001) == dz.Visitor("user:7", 7)
    assert dz.verify_visitor_token(KEY, SITE, "ALICE/A", token, now=1001) is not None
    assert dz.verify_visitor_token(KEY, SITE, "bob/b", token, now=1001) is None  # another space
    assert dz.verify_visitor_token("other-key", SITE, "alice/a", token, now=1001) is None  # another site's key
    assert dz.verify_visitor_token(KEY, "http://other.example", "alice/a", token, now=1001) is None
    assert dz.verify_visitor_token(KEY, SITE, "alice/a", token, now=1000 + dz.TOKEN_TTL) is None  # expired
    header, payload, signature = token.split(".")
    plain = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    changed = plain.replace(b'"uid":7', b'"uid":8').replace(b"user:7", b"user:8")
    assert changed != plain
    forged = base64.urlsafe_b64encode(changed).rstrip(b"=").decode()
    assert dz.verify_visitor_token(KEY, SITE, "alice/a", f"{header}.{forged}.{signature}", 1001) is None
    assert dz.verify_visitor_token(KEY, SITE, "alice/a", "not-a-jwt", 1001) is None


def test_instance_capability_names_the_instance_and_cannot_be_made_without_the_key() -> None:
    cap = dz.instance_capability(KEY, "sp-alice-a-3-1")
    assert dz.capability_instance(KEY, cap) == "sp-alice-a-3-1"
    assert dz.capability_instance("other-key", cap) is None
    mac = cap.rpartition(".")[2]
    assert dz.capability_instance(KEY, f"sp-bob-b-4-1.{mac}") is None  # a MAC does not move to another name
    assert dz.capability_instance(KEY, "sp-alice-a-3-1") is None
    assert len(mac) >= 43  # 256 bits
