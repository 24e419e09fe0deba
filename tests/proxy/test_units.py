"""Pure pieces: Route, RouteTable, ThrottledActivity, SingleFlight, path mapping."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

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


# ---- isolation helpers (issue 18) -------------------------------------------------------------------
def test_platform_credential_shapes() -> None:
    from controller.proxy.forward import is_platform_credential

    basic = b"Basic " + base64.b64encode(b"alice:sp_x")
    for value in (b"Bearer sp_abc", b"bearer  sp_abc ", basic, b"Token sp_abc"):
        assert is_platform_credential(value, b"sp_"), value
    for value in (b"Bearer hf_abc", b"Bearer app-key", b"Basic " + base64.b64encode(b"u:pw"), b"Basic %%%", b""):
        assert not is_platform_credential(value, b"sp_"), value


def test_set_cookie_names_and_the_response_filter() -> None:
    from controller.proxy.isolation import response_filter, set_cookie_name

    assert set_cookie_name(b" __Host-Spaceport_Session =x; Path=/") == b"spaceport_session"
    fix = response_filter(frozenset({b"spaceport_session"}), on_platform_origin=True, sandboxed=False,
                          rewrite_location=lambda v: b"/p" + v)
    out = fix([(b"set-cookie", b"spaceport_session=x; Domain=localhost"), (b"set-cookie", b"a=1"),
               (b"location", b"/x"), (b"service-worker-allowed", b"/"), (b"content-type", b"text/html")])
    assert out == [(b"set-cookie", b"a=1"), (b"location", b"/p/x"), (b"content-type", b"text/html")]


def test_app_auth_tokens_and_cookies_are_bound_and_expire() -> None:
    from controller.proxy.appauth import AppAuth, safe_next

    auth = AppAuth("k")
    token = auth.issue("Alice/Demo", 3, embed=True)
    grant = auth.redeem(token, "alice/demo")
    assert grant is not None and (grant.user_id, grant.embed) == (3, True)
    assert auth.redeem(token, "alice/other") is None and auth.redeem("garbage", "alice/demo") is None
    assert not auth.check_cookie(token, "alice/demo")  # a token is not a cookie
    cookie = auth.cookie("alice/demo", 3)
    assert auth.check_cookie(cookie, "alice/demo") and not auth.check_cookie(cookie, "alice/other")
    assert auth.redeem(cookie, "alice/demo") is None  # nor a cookie a token
    expired = AppAuth("k", cookie_max_age=-1, token_max_age=-1)
    assert expired.redeem(token, "alice/demo") is None
    later = AppAuth("k", clock=lambda: time.time() + 3601)  # the cookie carries its expiry (a JWT's exp)
    assert later.check_cookie(auth.cookie("alice/demo", 3), "alice/demo") is False
    assert AppAuth("other-key").check_cookie(cookie, "alice/demo") is False
    assert [safe_next(v) for v in ("/a?b=1", "//x", "/\\x", "/\n/x", "http://x", None)] == ["/a?b=1", "/", "/", "/", "/", "/"]

