"""App content kept away from the platform: credentials stripped both ways, path URLs redirected or
sandboxed, and the sign-in bridge for private spaces on their host URL (issue 18, items 3 and 4)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from proxy_harness import HOSTILE_SET_COOKIES, PLATFORM_TOKEN, TEST_KEY, Stack

from controller.proxy.appauth import APP_COOKIE, AppAuth
from controller.proxy.isolation import PathMode

CREDENTIAL_COOKIES = f"theme=dark; spaceport_session=S3SSION; spaceport_csrf=CSRFNONCE; {APP_COOKIE}=APPCOOKIE; x=1"


@pytest.fixture
def path_mode(stack: Stack) -> Iterator[None]:
    """Tests set the site's path mode (both planes); restore the harness's mode afterwards."""
    before = stack.middleware.path_mode
    yield
    stack.set_path_mode(before)


def set_mode(stack: Stack, mode: PathMode) -> None:
    stack.set_path_mode(mode)


async def echo_headers(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict[str, str]:
    async with client.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return {k.lower(): v for k, v in (await resp.json())["headers"]}


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {PLATFORM_TOKEN}",
        "bearer sp_revoked-or-mistyped",
        "Basic " + base64.b64encode(b"alice:sp_gitstyle").decode(),
        "Token sp_other-scheme",
    ],
)
@pytest.mark.parametrize("header", ["Authorization", "X-HF-Authorization"])
async def test_platform_credentials_never_reach_the_app(stack: Stack, authorization: str, header: str) -> None:
    route = stack.add()
    headers = {"Cookie": CREDENTIAL_COOKIES, header: authorization}
    async with aiohttp.ClientSession() as client:
        for url, host in ((f"{stack.url}/echo", stack.host(route.slug)), (f"{stack.url}/apps/{route.space_id}/echo", None)):
            got = await echo_headers(client, url, {**headers, **({"Host": host} if host else {})})
            assert header.lower() not in got, url
            assert got["cookie"] == "theme=dark; x=1", url


async def test_an_apps_own_authorization_still_reaches_it(stack: Stack) -> None:
    route = stack.add()
    async with aiohttp.ClientSession() as client:
        got = await echo_headers(client, f"{stack.url}/echo", {"Host": stack.host(route.slug),
                                                              "Authorization": "Bearer app-own-api-key"})
    assert got["authorization"] == "Bearer app-own-api-key"


async def test_private_space_is_checked_with_the_token_then_the_token_is_stripped(stack: Stack) -> None:
    route = stack.add(private=True)
    async with aiohttp.ClientSession() as client:
        host = {"Host": stack.host(route.slug)}
        async with client.get(f"{stack.url}/echo", headers=host) as resp:
            assert resp.status == 404
        for header in ("Authorization", "X-HF-Authorization"):  # gradio_client sends the latter
            got = await echo_headers(client, f"{stack.url}/echo", {**host, header: f"Bearer {PLATFORM_TOKEN}"})
            assert header.lower() not in got


async def test_websocket_handshake_carries_no_platform_credentials(stack: Stack) -> None:
    route = stack.add()
    headers = {"Host": stack.host(route.slug), "Cookie": CREDENTIAL_COOKIES,
               "Authorization": f"Bearer {PLATFORM_TOKEN}"}
    async with aiohttp.ClientSession() as client, client.ws_connect(f"{stack.url}/wsheaders", headers=headers) as ws:
        got = {k.lower(): v for k, v in json.loads((await ws.receive()).data)}
    assert "authorization" not in got and got["cookie"] == "theme=dark; x=1"


async def set_cookies(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
    async with client.get(url, headers=headers) as resp:
        await resp.read()
        return resp


async def test_app_responses_never_set_the_platforms_cookies(stack: Stack, path_mode: None) -> None:
    route = stack.add()
    assert len(HOSTILE_SET_COOKIES) == 8
    async with aiohttp.ClientSession() as client:
        host = await set_cookies(client, f"{stack.url}/hostile-headers", {"Host": stack.host(route.slug)})
        set_mode(stack, "trusted")
        with stack.carried():  # HAProxy filters them itself on the haproxy plane
            path = await set_cookies(client, f"{stack.url}/apps/{route.space_id}/hostile-headers", {})
    for resp in (host, path):
        assert resp.headers.getall("Set-Cookie") == ["theme=dark; Path=/"]
    assert host.headers["Service-Worker-Allowed"] == "/"  # the app's own origin: its business
    assert "Service-Worker-Allowed" not in path.headers and "Clear-Site-Data" not in path.headers


async def test_path_urls_redirect_to_the_host_url_by_default(stack: Stack, path_mode: None) -> None:
    set_mode(stack, "redirect")
    route = stack.add()
    origin = f"http://{stack.host(route.slug)}"
    async with aiohttp.ClientSession() as client:
        for method in ("GET", "POST"):
            async with client.request(method, f"{stack.url}/apps/{route.space_id}/echo/a%2Fb?x=1&y=%20",
                                      allow_redirects=False) as resp:
                assert resp.status == 307, method  # keeps the method and body
                assert resp.headers["Location"] == f"{origin}/echo/a%2Fb?x=1&y=%20"
        async with client.get(f"{stack.url}/apps/{route.space_id}?q=1", allow_redirects=False) as resp:
            assert resp.headers["Location"] == f"{origin}/?q=1"
        async with client.get(f"{stack.url}/apps/{route.space_id}/hostile-headers", allow_redirects=False) as resp:
            assert resp.status == 307 and "Set-Cookie" not in resp.headers  # nothing of the app on this origin
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect(f"{stack.url}/apps/{route.space_id}/ws")
        async with client.get(f"{stack.url}/apps/nobody/nothing/", allow_redirects=False) as resp:
            assert resp.status == 404


async def test_path_redirect_of_a_private_space_needs_access_first(stack: Stack, path_mode: None) -> None:
    set_mode(stack, "redirect")
    route = stack.add(private=True)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/apps/{route.space_id}/", allow_redirects=False) as resp:
            assert resp.status == 404  # no hint that it exists
        async with client.get(f"{stack.url}/apps/{route.space_id}/", allow_redirects=False,
                              headers={"x-test-token": "letmein"}) as resp:
            assert resp.status == 307 and resp.headers["Location"] == f"http://{stack.host(route.slug)}/"


async def test_sandboxed_path_mode_serves_an_opaque_origin_without_cookies(stack: Stack, path_mode: None) -> None:
    set_mode(stack, "sandboxed")
    route = stack.add()
    async with aiohttp.ClientSession() as client:
        resp = await set_cookies(client, f"{stack.url}/apps/{route.space_id}/hostile-headers", {})
        assert resp.status == 200
        assert resp.headers.getall("Content-Security-Policy") == [
            "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals"
        ]
        assert "Set-Cookie" not in resp.headers and "Service-Worker-Allowed" not in resp.headers
        host = await set_cookies(client, f"{stack.url}/hostile-headers", {"Host": stack.host(route.slug)})
        assert "Content-Security-Policy" not in host.headers  # its own origin needs no sandbox


# ---- the sign-in bridge for private spaces on their host URL -----------------------------------------
async def test_browser_without_app_credentials_is_sent_to_the_platform_bridge(stack: Stack) -> None:
    route = stack.add(private=True)
    host = {"Host": stack.host(route.slug), "Accept": "text/html"}
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/page?q=1", headers=host, allow_redirects=False) as resp:
            assert resp.status == 307
            location = urlsplit(resp.headers["Location"])
        assert (location.scheme, location.netloc, location.path) == ("http", f"apps.localhost:{stack.proxy_port}",
                                                                    "/auth/app")
        assert parse_qs(location.query) == {"space": [route.space_id], "next": ["/page?q=1"]}
        async with client.get(f"{stack.url}/", headers={**host, "Sec-Fetch-Dest": "iframe"},
                              allow_redirects=False) as resp:
            assert parse_qs(urlsplit(resp.headers["Location"]).query)["embed"] == ["1"]
        async with client.get(f"{stack.url}/echo", headers={"Host": stack.host(route.slug)}) as resp:
            assert resp.status == 404  # API clients without a token: invisible, as before


async def redeem(client: aiohttp.ClientSession, stack: Stack, slug: str, token: str, next_path: str) -> aiohttp.ClientResponse:
    url = f"{stack.url}/__spaceport__/auth?token={quote(token)}&next={quote(next_path, safe='')}"
    async with client.get(url, headers={"Host": stack.host(slug)}, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def test_bridge_token_becomes_a_host_only_cookie_for_that_space_only(stack: Stack) -> None:
    space_a, space_b = stack.add(private=True), stack.add(private=True)
    auth = AppAuth(TEST_KEY)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        resp = await redeem(client, stack, space_a.slug, auth.issue(space_a.space_id, 7), "/echo/x?y=1")
        assert resp.status == 303 and resp.headers["Location"] == "/echo/x?y=1"
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith(f"{APP_COOKIE}=") and "Domain" not in cookie
        assert {"HttpOnly", "SameSite=Lax", "Max-Age=3600", "Path=/"} <= {a.strip() for a in cookie.split(";")}
        value = cookie.split(";")[0]
        got = await echo_headers(client, f"{stack.url}/echo", {"Host": stack.host(space_a.slug), "Cookie": value})
        assert "cookie" not in got  # checked, then stripped
        for slug in (space_b.slug,):
            async with client.get(f"{stack.url}/echo", headers={"Host": stack.host(slug), "Cookie": value}) as r:
                assert r.status == 404  # space A's cookie does not open space B
        refused = await redeem(client, stack, space_b.slug, auth.issue(space_a.space_id, 7), "/")
        assert refused.status == 403 and "Set-Cookie" not in refused.headers
        token_as_cookie = f"{APP_COOKIE}={auth.issue(space_a.space_id, 7)}"
        async with client.get(f"{stack.url}/echo", headers={"Host": stack.host(space_a.slug), "Cookie": token_as_cookie}) as r:
            assert r.status == 404
        forged = await redeem(client, stack, space_a.slug, AppAuth("another-key").issue(space_a.space_id, 7), "/")
        assert forged.status == 403


@pytest.mark.parametrize("next_path", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example",
                                       "evil.example", ""])
async def test_bridge_never_redirects_off_the_app(stack: Stack, next_path: str) -> None:
    route = stack.add(private=True)
    async with aiohttp.ClientSession() as client:
        resp = await redeem(client, stack, route.slug, AppAuth(TEST_KEY).issue(route.space_id, 1), next_path)
    assert resp.status == 303 and resp.headers["Location"] == "/"


async def test_embedded_bridge_sets_a_partitioned_cross_site_cookie(stack: Stack) -> None:
    route = stack.add(private=True)
    async with aiohttp.ClientSession() as client:
        resp = await redeem(client, stack, route.slug, AppAuth(TEST_KEY).issue(route.space_id, 1, embed=True), "/")
    attrs = {a.strip() for a in resp.headers["Set-Cookie"].split(";")}
    assert {"SameSite=None", "Secure", "Partitioned", "HttpOnly"} <= attrs


async def test_readme_custom_headers_and_disable_embedding_reach_app_responses(stack: Stack) -> None:
    """README `custom_headers` (the allowed ones, routing decides which) replace the app's own; with
    `disable_embedding` a CSP frame-ancestors is added next to the app's own CSP, which stays in force."""
    isolated = stack.add(headers=(("cross-origin-embedder-policy", "require-corp"),
                                  ("cross-origin-opener-policy", "same-origin")), embeddable=False)
    plain = stack.add()
    async with aiohttp.ClientSession() as client:
        for url, host in ((f"{stack.url}/own-policies", stack.host(isolated.slug)),
                          (f"{stack.url}/apps/{isolated.space_id}/own-policies", None)):
            async with client.get(url, headers={"Host": host} if host else {}, allow_redirects=False) as resp:
                if resp.status in (301, 302, 307, 308):  # path mode "redirect": the host URL carries them
                    continue
                assert resp.headers.getall("Cross-Origin-Opener-Policy") == ["same-origin"], url
                assert resp.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
                policies = resp.headers.getall("Content-Security-Policy")
                assert "default-src * 'unsafe-inline'" in policies and any(
                    p.startswith("frame-ancestors ") for p in policies), policies
        async with client.get(f"{stack.url}/own-policies", headers={"Host": stack.host(plain.slug)}) as resp:
            assert "Cross-Origin-Embedder-Policy" not in resp.headers
            assert resp.headers.getall("Cross-Origin-Opener-Policy") == ["unsafe-none"]
            assert not any(p.startswith("frame-ancestors") for p in resp.headers.getall("Content-Security-Policy"))
