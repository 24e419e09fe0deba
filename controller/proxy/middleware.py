"""ProxyMiddleware: plain ASGI app that sends space traffic to the space and the rest to the controller.

A request is space traffic when its Host is `<slug>.<apps_domain>` (host-based, like *.hf.space) or its
path starts with `/apps/OWNER/NAME` (path-based). Everything else goes to `inner` untouched.

App content never runs on the platform's origin unless the site says so (`path_mode`, see
`isolation`): by default a path-based request is redirected to the app's host URL. The platform's
credentials (its cookies, an Authorization header with a platform token) are used for the access check
and stripped before the request reaches the app; app responses never set the platform's cookies.
Private spaces on their host URL are signed in through the platform (see `appauth`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

import aiohttp
from yarl import URL

from controller.proxy import pages
from controller.proxy.activator import SingleFlight
from controller.proxy.appauth import APP_COOKIE, AUTH_PATH, BRIDGE_PATH, AppAuth, safe_next
from controller.proxy.forward import (
    UpstreamError,
    forward_http,
    open_websocket,
    relay_websocket,
    upstream_headers,
)
from controller.proxy.isolation import PATH_MODES, PathMode, cookie_names, response_filter, route_headers
from controller.proxy.types import AccessPolicy, Activator, ActivitySink, HealthSink, Route, RouteSource

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Target:
    """A request resolved to a space: its route (None = unknown) and where the app path starts."""

    route: Route | None
    prefix: str  # public path prefix as requested ("/apps/o/n"), "" when host-based
    rest: bytes  # raw path after the prefix (the whole raw path when host-based)

    @property
    def host_based(self) -> bool:
        return not self.prefix


class Denied(Exception):
    """Answer the client with this status/title/message instead of proxying."""

    def __init__(self, status: int, title: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.retry_after = status, title, message, retry_after


NOT_FOUND = Denied(404, "404 Not Found", "Sorry, we can't find the page you are looking for.")


class ProxyMiddleware:
    """Route space traffic to upstream apps; see the module docstring and `types.Route`."""

    def __init__(
        self,
        inner: ASGIApp,
        *,
        apps_domain: str,
        routes: RouteSource,
        activity: ActivitySink,
        access: AccessPolicy,
        activator: Activator | None,
        health: HealthSink | None = None,
        wake_timeout: float = 120.0,
        connect_timeout: float = 10.0,
        platform_cookies: tuple[str, ...] = ("spaceport_session", "spaceport_csrf"),
        token_prefix: str = "sp_",
        path_prefix: str = "/apps",
        path_mode: PathMode = "redirect",
        public_url: str = "",
        app_auth: AppAuth | None = None,
        clock: Callable[[], float] = time.time,
        max_connections: int = 0,
    ) -> None:
        self.inner = inner
        self.apps_domain = apps_domain.lower().split(":")[0].strip(".")
        self._host_suffix = "." + self.apps_domain
        self.routes, self.activity, self.access, self.activator = routes, activity, access, activator
        self.health = health
        self.wake_timeout, self.connect_timeout = wake_timeout, connect_timeout
        if path_mode not in PATH_MODES:
            raise ValueError(f"path_mode must be one of {', '.join(PATH_MODES)}, got {path_mode!r}")
        self._cookies = cookie_names((*platform_cookies, APP_COOKIE))
        self._token_prefix = token_prefix.encode()
        self._path_prefix = "/" + path_prefix.strip("/") + "/"
        self.path_mode: PathMode = path_mode
        self.app_auth = app_auth
        self._public = _origin_parts(public_url)
        self._public_url = public_url.rstrip("/")
        self._public_origin = "/".join(self._public_url.split("/")[:3]) if "://" in self._public_url else ""
        self.clock = clock
        self.max_connections = max_connections
        self.wakes: SingleFlight[Route] = SingleFlight()
        self._wake_errors: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None

    # ---- ASGI entry point -------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            target = self.resolve(scope)
            if target is not None:
                await self._handle(target, scope, receive, send)
                return
        elif kind == "lifespan":
            receive = self._lifespan_receive(receive)
        await self.inner(scope, receive, send)

    def resolve(self, scope: Scope) -> Target | None:
        """Is this request space traffic? Host-based wins over path-based."""
        host = _header(scope, b"host").decode("latin-1").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if hostname.endswith(self._host_suffix):
            slug = hostname[: -len(self._host_suffix)]
            if slug and "." not in slug:
                return Target(self.routes.by_slug(slug), "", _raw_path(scope))
        path: str = scope["path"]
        if not path.startswith(self._path_prefix):
            return None
        owner, _, rest = path[len(self._path_prefix) :].partition("/")
        name = rest.partition("/")[0]
        if not owner or not name:
            return None
        prefix = f"{self._path_prefix}{owner}/{name}"
        return Target(self.routes.by_space(owner, name), prefix, _rest_after(scope, prefix))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- request handling ---------------------------------------------------------------------
    async def _handle(self, target: Target, scope: Scope, receive: Receive, send: Send) -> None:
        is_ws = scope["type"] == "websocket"
        if is_ws:
            await receive()  # websocket.connect
        as_html = not is_ws and scope["method"] == "GET" and b"text/html" in _header(scope, b"accept")
        try:
            route = await self._admit(target, scope, send, as_html)
            if route is None:
                return
            self.activity.record(route.space_id, self.clock())
            if is_ws:
                await self._proxy_websocket(route, target, scope, receive, send)
            else:
                await self._proxy_http(route, target, scope, receive, send)
        except Denied as denied:
            await self._deny(scope, send, denied, as_html)

    async def _admit(self, target: Target, scope: Scope, send: Send, as_html: bool) -> Route | None:
        """Check existence, access and state; wake a sleeping space. None = already answered."""
        route = target.route
        if route is None:
            raise NOT_FOUND
        if target.host_based and target.rest == AUTH_PATH.encode() and scope["type"] == "http":
            await self._redeem(route, scope, send, as_html)
            return None
        if route.private and not await self._may_view(route, target, scope):
            if target.host_based and as_html and self.app_auth is not None:
                await _redirect(send, self._bridge_url(route, target, scope), keep_query=False)
                return None
            raise NOT_FOUND
        if target.prefix and self.path_mode == "redirect":
            if scope["type"] != "http":
                raise Denied(404, "Use the app's own URL", f"Connect to {self.app_origin(route, scope)}.")
            await _redirect(send, self.app_origin(route, scope) + (target.rest.decode("latin-1") or "/"), scope)
            return None
        if target.prefix and not target.rest and scope["type"] == "http":
            await _redirect(send, target.prefix + "/", scope)
            return None
        if target.rest == pages.STATUS_SUFFIX.encode():
            await pages.respond_json(send, 200, self.status(route))
            return None
        if route.state == "asleep":
            woken = await self._wake(route, target, send, as_html and scope["type"] == "http")
            if woken is None:
                return None
            route = woken
        _check_state(route)
        return route

    async def _may_view(self, route: Route, target: Target, scope: Scope) -> bool:
        """A valid app cookie for this very space (host URLs; no database), else the access policy
        (a token in Authorization, or the platform session on path URLs)."""
        auth = self.app_auth
        if auth is not None and target.host_based:
            value = _cookie(scope, APP_COOKIE)
            if value and auth.check_cookie(value, route.space_id):
                return True
        return await self.access.may_view(route, _hf_authorization_as_authorization(scope))

    async def _redeem(self, route: Route, scope: Scope, send: Send, as_html: bool) -> None:
        """`/__spaceport__/auth?token=...&next=...`: bridge token -> per-space cookie -> `next`."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token, target = query.get("token", [""])[0], safe_next(query.get("next", ["/"])[0])
        grant = self.app_auth.redeem(token, route.space_id) if self.app_auth is not None else None
        if self.app_auth is None or grant is None:
            raise Denied(403, "Sign-in link expired", "This sign-in link is invalid or has expired. "
                         "Open the app again from its page on the platform.")
        secure = scope.get("scheme") == "https"
        cookie = self.app_auth.set_cookie_header(
            self.app_auth.cookie(route.space_id, grant.user_id), secure=secure, embed=grant.embed
        )
        await _redirect(send, target, keep_query=False, status=303, extra=[(b"set-cookie", cookie)])

    def _bridge_url(self, route: Route, target: Target, scope: Scope) -> str:
        query: bytes = scope.get("query_string", b"")
        next_path = (target.rest or b"/") + (b"?" + query if query else b"")
        params = f"space={quote(route.space_id, safe='/')}&next={quote(next_path.decode('latin-1'), safe='')}"
        if _header(scope, b"sec-fetch-dest") in (b"iframe", b"frame"):
            params += "&embed=1"
        return f"{self.platform_origin(scope)}{BRIDGE_PATH}?{params}"

    def app_origin(self, route: Route, scope: Scope) -> str:
        """The app's host URL origin: scheme and port of the public URL (else of this request)."""
        scheme, port = self._public or _request_origin_parts(scope)
        return f"{scheme}://{route.slug}.{self.apps_domain}{port}"

    def platform_origin(self, scope: Scope) -> str:
        if self._public is not None:
            return self._public_url
        scheme, port = _request_origin_parts(scope)
        return f"{scheme}://{self.apps_domain}{port}"

    def status(self, route: Route) -> dict[str, Any]:
        """The JSON the waking page polls: {"space", "state", "message"}."""
        state: str = route.state
        message = route.message
        if state == "asleep" and self.wakes.in_flight(route.space_id):
            state, message = "waking", message or "Waking up"
        elif state == "asleep":
            message = self._wake_errors.get(route.space_id, message)
        return {"space": route.space_id, "state": state, "message": message}

    async def _wake(self, route: Route, target: Target, send: Send, browser: bool) -> Route | None:
        activator = self.activator
        if activator is None:
            raise Denied(503, "Space is sleeping", f"{route.space_id} is sleeping.", retry_after=30)
        flight = self.wakes.start(route.space_id, lambda: self._do_wake(activator, route))
        if browser:
            status_url = target.prefix + pages.STATUS_SUFFIX
            await pages.respond_waking(send, route.space_id, route.message, status_url)
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(flight), self.wake_timeout)
        except TimeoutError:
            raise Denied(503, "Space is waking up", f"{route.space_id} is still starting.", 10) from None
        except Exception as exc:
            raise Denied(503, "Space failed to wake", f"{route.space_id}: {exc}", 30) from exc

    async def _do_wake(self, activator: Activator, route: Route) -> Route:
        self._wake_errors.pop(route.space_id, None)
        try:
            return await activator.wake(route)
        except Exception as exc:
            self._wake_errors[route.space_id] = f"Failed to wake: {exc}"
            raise

    # ---- forwarding -------------------------------------------------------------------------
    def session(self) -> aiohttp.ClientSession:
        """The pooled client (created lazily inside the serving event loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, force_close=False)
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout, sock_read=None
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def _proxy_http(
        self, route: Route, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        url = _upstream_url(route, target, scope)
        headers = upstream_headers(scope, self._cookies, websocket=False, token_prefix=self._token_prefix)
        space_id, activity, clock = route.space_id, self.activity, self.clock

        def tick() -> None:
            activity.record(space_id, clock())

        fix = response_filter(
            self._cookies,
            on_platform_origin=not target.host_based,
            sandboxed=not target.host_based and self.path_mode == "sandboxed",
            rewrite_location=_location_rewriter(route, target),
            added=route_headers(route.headers, route.embeddable, self._public_origin),
        )
        try:
            await forward_http(self.session(), url, scope, receive, send, headers, tick, fix)
        except UpstreamError as exc:
            self._upstream_failed(route, str(exc))

    async def _proxy_websocket(
        self, route: Route, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        url = _upstream_url(route, target, scope)
        headers = upstream_headers(scope, self._cookies, websocket=True, token_prefix=self._token_prefix)
        try:
            ws = await open_websocket(self.session(), url, scope, headers)
        except UpstreamError as exc:
            if exc.status is None:
                self._upstream_failed(route, str(exc))
            raise Denied(exc.status or 502, "Bad Gateway", str(exc)) from exc
        space_id, activity, clock = route.space_id, self.activity, self.clock

        def tick() -> None:
            activity.record(space_id, clock())

        await relay_websocket(ws, receive, send, tick)

    def _upstream_failed(self, route: Route, error: str) -> None:
        if self.health is not None:
            self.health.upstream_failed(route, error)
        raise Denied(502, "502 Bad Gateway", f"{route.space_id}: {error}")

    async def _deny(self, scope: Scope, send: Send, denied: Denied, as_html: bool) -> None:
        if scope["type"] == "http":
            await pages.respond_error(
                send, denied.status, denied.title, denied.message, as_html, denied.retry_after
            )
            return
        if "websocket.http.response" in scope.get("extensions", {}):
            body = f'{{"error": "{denied.title}"}}'.encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "websocket.http.response.start", "status": denied.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "websocket.close", "code": 1013 if denied.status == 503 else 1008})

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        return wrapped


# ---- helpers (pure) -----------------------------------------------------------------------------
def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def _cookie(scope: Scope, name: str) -> str:
    """The value of one cookie from the Cookie header(s), "" if absent."""
    wanted = name.encode() + b"="
    for key, value in scope["headers"]:
        if key == b"cookie" and wanted in value:
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(wanted):
                    return part[len(wanted) :].decode("latin-1")
    return ""


def _hf_authorization_as_authorization(scope: Scope) -> Scope:
    """gradio_client and huggingface_hub send a Space's token as X-HF-Authorization (what the Hub's
    proxy reads); the access policy reads Authorization, so hand it over when that is absent."""
    hf = _header(scope, b"x-hf-authorization")
    if not hf or _header(scope, b"authorization"):
        return scope
    return {**scope, "headers": [*scope["headers"], (b"authorization", hf)]}


def _origin_parts(url: str) -> tuple[str, str] | None:
    """("https", ":8443") from a public URL; None when there is none."""
    if not url:
        return None
    scheme, _, rest = url.partition("://")
    hostport = rest.split("/", 1)[0]
    port = ":" + hostport.rsplit(":", 1)[1] if ":" in hostport and not hostport.endswith("]") else ""
    return (scheme or "http"), port


def _request_origin_parts(scope: Scope) -> tuple[str, str]:
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    host = _header(scope, b"host").decode("latin-1")
    port = ":" + host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else ""
    return scheme, port


def _raw_path(scope: Scope) -> bytes:
    raw = scope.get("raw_path")
    return bytes(raw) if raw else quote(scope["path"]).encode()


def _rest_after(scope: Scope, prefix: str) -> bytes:
    raw = _raw_path(scope)
    encoded = quote(prefix).encode()
    if raw.startswith(encoded):
        return raw[len(encoded) :]
    return quote(scope["path"][len(prefix) :]).encode()


def _check_state(route: Route) -> None:
    if route.state == "ready":
        return
    if route.state == "paused":
        raise Denied(503, "Space paused", f"{route.space_id} has been paused by its owner.")
    if route.state == "asleep":
        raise Denied(503, "Space is sleeping", f"{route.space_id} is still asleep.", retry_after=10)
    raise Denied(
        503, "Space unavailable", route.message or f"{route.space_id} is not running.", retry_after=10
    )


def upstream_path(route: Route, target: Target) -> bytes:
    """Map the public raw path to the app's path (see `Route` for strip vs keep)."""
    base = route.base_path.encode()
    path = target.rest or b"/"
    if not target.host_based:
        return path if route.strip_base_path else base + path
    under_base = path == base or path.startswith(base + b"/")
    if route.strip_base_path:
        return (path[len(base) :] or b"/") if under_base else path
    return path if under_base else base + path


def _upstream_url(route: Route, target: Target, scope: Scope) -> URL:
    query: bytes = scope.get("query_string", b"")
    path = upstream_path(route, target).decode("latin-1")
    suffix = f"{path}?{query.decode('latin-1')}" if query else path
    return URL(route.target + suffix, encoded=True)


def _location_rewriter(route: Route, target: Target) -> Callable[[bytes], bytes] | None:
    """Make Location headers public: drop the internal origin; add the path prefix if it was stripped."""
    origin = route.target.encode()
    prefix = target.prefix.encode() if route.strip_base_path else b""

    def rewrite(value: bytes) -> bytes:
        if value.startswith(origin) and value[len(origin) : len(origin) + 1] in (b"", b"/", b"?"):
            value = value[len(origin) :] or b"/"
        if prefix and value.startswith(b"/") and not value.startswith((b"//", prefix + b"/")):
            value = prefix + value
        return value

    return rewrite


async def _redirect(
    send: Send,
    location: str,
    scope: Scope | None = None,
    *,
    keep_query: bool = True,
    status: int = 307,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Redirect to `location` (plus the request's query string when `scope` is given and keep_query)."""
    query: bytes = scope.get("query_string", b"") if scope is not None and keep_query else b""
    target = location.encode("latin-1") + (b"?" + query if query else b"")
    headers = [(b"location", target), (b"content-length", b"0"), (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
