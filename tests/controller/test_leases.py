"""Leases (one holder at a time, released when the holder's connection or process goes) and the bus
(notices between a site's processes), on the real PostgreSQL and Redis of the test tiers."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from controller.config import Settings
from controller.services.bus import KICK, RESYNC, ROUTE, LocalBus, RedisBus, bus_for, site_channel
from controller.services.leases import FileLease, PostgresLease, exclusive, lease_for, lease_key
from controller.services.platform import Platform
from tests.support.databases import fresh_database


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[str]:
    with fresh_database(pg_url) as url:
        yield url


def test_postgres_lease_has_one_holder_and_passes_on_when_its_connection_dies(pg_db: str) -> None:
    first, second = PostgresLease(pg_db, "leader"), PostgresLease(pg_db, "leader")
    assert first.acquire() and first.check()
    assert not second.acquire() and not second.check()
    assert PostgresLease(pg_db, "sweep").acquire()  # another name is another lease
    admin = create_engine(pg_db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # the holder's connection dies (as when its process is SIGKILLed)
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                          "AND ((classid::bigint << 32) | objid::bigint) = (:key & x'ffffffffffffffff'::bigint)"),
                     {"key": lease_key("leader")})
    admin.dispose()
    assert not first.check()  # the old holder notices it lost the lease
    assert second.acquire() and second.check()
    second.release()
    assert first.acquire()
    first.release()


def test_postgres_lease_is_released_when_the_holding_process_is_killed(pg_db: str, tmp_path: Path) -> None:
    script = ("import sys, time\nfrom controller.services.leases import PostgresLease\n"
              "lease = PostgresLease(sys.argv[1], 'leader')\nassert lease.acquire()\nprint('held', flush=True)\n"
              "time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, pg_db], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waiting = PostgresLease(pg_db, "leader")
        assert not waiting.acquire()
        holder.kill()
        holder.wait()
        assert _eventually(waiting.acquire), "the lease stayed with a dead process"
        waiting.release()
    finally:
        with contextlib.suppress(ProcessLookupError):
            holder.kill()


def _eventually(check: Callable[[], bool], tries: int = 50) -> bool:
    for _ in range(tries):
        if check():
            return True
        time.sleep(0.1)
    return False


def test_file_lease_has_one_holder_until_released(tmp_path: Path) -> None:
    first, second = FileLease(tmp_path / "locks" / "leader.lock"), FileLease(tmp_path / "locks" / "leader.lock")
    assert first.acquire() and first.acquire()  # idempotent for its holder
    assert not second.acquire()
    first.release()
    assert second.acquire() and second.check()
    second.release()


def test_exclusive_runs_the_block_in_one_process_at_a_time(tmp_path: Path, pg_db: str) -> None:
    for url in ("", pg_db):
        platform = Platform(Settings(data_dir=tmp_path / f"data{bool(url)}", database_url=url))
        with exclusive(platform, "sweep") as mine:
            assert mine
            with exclusive(platform, "sweep") as again:
                assert not again
        with exclusive(platform, "sweep") as after:
            assert after
        kind = type(lease_for(platform, "leader")).__name__
        assert kind == ("PostgresLease" if url else "FileLease")
        platform.dispose()


def test_bus_is_redis_only_with_a_redis_broker(tmp_path: Path, redis_url: str) -> None:
    assert isinstance(bus_for(Settings(data_dir=tmp_path)), LocalBus)
    bus = bus_for(Settings(data_dir=tmp_path, broker_url=redis_url))
    assert isinstance(bus, RedisBus)
    other_site = Settings(data_dir=tmp_path, broker_url=redis_url, database_url="postgresql+psycopg://x@h/other")
    assert site_channel(other_site) != bus.channel  # pub/sub ignores Redis db numbers: one channel per site


async def test_redis_bus_delivers_notices_to_every_listener(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=redis_url, database_url=f"sqlite:///{tmp_path}/x.db")
    sender, got_a, got_b = bus_for(settings), [], []
    resynced = [asyncio.Event(), asyncio.Event()]

    def handler(seen: list[tuple[str, str]], resync: asyncio.Event) -> object:
        def on(topic: str, data: str) -> None:
            if topic == RESYNC:
                resync.set()
            else:
                seen.append((topic, data))
        return on

    listeners = [asyncio.create_task(bus_for(settings).listen(handler(got, ev)))  # type: ignore[arg-type]
                 for got, ev in ((got_a, resynced[0]), (got_b, resynced[1]))]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in resynced)), 10)  # subscribed
        sender.publish(KICK)
        sender.publish(ROUTE, "7 alice/demo")
        for _ in range(100):
            if len(got_a) == 2 and len(got_b) == 2:
                break
            await asyncio.sleep(0.05)
        assert got_a == got_b == [(KICK, ""), (ROUTE, "7 alice/demo")]
    finally:
        for task in listeners:
            task.cancel()
