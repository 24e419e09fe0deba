"""Pure pieces: Route, RouteTable, ThrottledActivity, SingleFlight, path mapping."""

from __future__ import annotations

import asyncio
import threading

import pytest

from controller.proxy import Route, RouteTable, SingleFlight, ThrottledActivity
from controller.proxy.middleware import Target, upstream_path


def make(space: str = "alice/demo", **kwargs: object) -> Route:
    return Route(space_id=space, slug=space.replace("/", "-"), target="http://127.0.0.1:9000/", **kwargs)  # type: ignore[arg-type]


def test_route_defaults_and_validation() -> None:
    route = make()
    assert (route.owner, route.name, route.base_path, route.target) == (
        "alice",
        "demo",
        "/apps/alice/demo",
        "http://127.0.0.1:9000",
    )
    assert make(base_path="custom/x/").base_path == "/custom/x"
    with pytest.raises(ValueError):
        make("no-slash")


def test_route_table_lookups_updates_and_slug_changes() -> None:
    table = RouteTable([make()])
    assert table.by_slug("Alice-Demo") == table.by_space("alice", "DEMO") == make()
    table.set(Route(space_id="alice/demo", slug="renamed", target="http://127.0.0.1:1"))
    assert table.by_slug("alice-demo") is None
    assert table.by_slug("renamed") is not None and table.by_space("alice", "demo") is not None
    assert table.remove("alice/demo") is not None
    assert (table.by_slug("renamed"), table.by_space("alice", "demo"), len(table)) == (None, None, 0)


def test_route_table_is_consistent_under_concurrent_writers() -> None:
    table = RouteTable()

    def writer(k: int) -> None:
        for i in range(500):
            table.set(make(f"u{k}/s{i}"))
            if i % 2:
                table.remove(f"u{k}/s{i}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(table) == 4 * 250
    assert all(table.by_slug(r.slug) == r for r in table.all())


def test_throttled_activity() -> None:
    activity = ThrottledActivity(interval=10)
    activity.record("a/b", 100.0)
    activity.record("a/b", 105.0)  # throttled
    activity.record("c/d", 106.0)
    assert activity.drain() == {"a/b": 100.0, "c/d": 106.0}
    assert activity.drain() == {}
    activity.record("a/b", 109.9)
    assert activity.drain() == {}
    activity.record("a/b", 110.0)
    assert activity.drain() == {"a/b": 110.0}
    activity.forget("a/b")
    activity.record("a/b", 111.0)
    assert activity.last_seen("a/b") == 111.0


async def test_single_flight_shares_one_call_and_survives_waiter_timeouts() -> None:
    flights: SingleFlight[int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    waiters = [asyncio.ensure_future(flights.run("k", work)) for _ in range(20)]
    with pytest.raises(TimeoutError):
        await flights.run("k", work, timeout=0.01)
    assert flights.in_flight("k")
    release.set()
    assert await asyncio.gather(*waiters) == [1] * 20
    assert not flights.in_flight("k")
    release.set()
    assert await flights.run("k", work) == 2  # a finished flight is not cached


async def test_single_flight_propagates_errors_to_every_waiter() -> None:
    flights: SingleFlight[int] = SingleFlight()

    async def boom() -> int:
        await asyncio.sleep(0)
        raise RuntimeError("nope")

    results = await asyncio.gather(*(flights.run("k", boom) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


@pytest.mark.parametrize(
    ("strip", "prefix", "rest", "expected"),
    [
        (True, "/apps/alice/demo", b"/config", b"/config"),
        (True, "/apps/alice/demo", b"/", b"/"),
        (False, "/apps/Alice/Demo", b"/_stcore/stream", b"/apps/alice/demo/_stcore/stream"),
        (True, "", b"/gradio_api/info", b"/gradio_api/info"),
        (True, "", b"/apps/alice/demo/gradio_api/info", b"/gradio_api/info"),
        (True, "", b"/apps/alice/demo", b"/"),
        (True, "", b"/apps/alice/demox", b"/apps/alice/demox"),
        (False, "", b"/", b"/apps/alice/demo/"),
        (False, "", b"/apps/alice/demo/static/x.js", b"/apps/alice/demo/static/x.js"),
    ],
)
def test_upstream_path(strip: bool, prefix: str, rest: bytes, expected: bytes) -> None:
    route = make(strip_base_path=strip)
    assert upstream_path(route, Target(route, prefix, rest)) == expected
