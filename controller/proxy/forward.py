"""Streaming HTTP and WebSocket forwarding from an ASGI connection to an upstream over aiohttp."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from yarl import URL

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Tick = Callable[[], None]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"})
_WS_HANDSHAKE = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
_UNSENDABLE_CLOSE = {1005: 1000, 1006: 1011, 1015: 1011}
# Where clients put a platform token: Authorization, and X-HF-Authorization (gradio_client >= 1 and
# huggingface_hub send the token there when talking to a Space, as the Hub's own proxy expects).
CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-hf-authorization"})


class UpstreamError(Exception):
    """The upstream could not be reached or closed before answering (-> 502).

    `status` is set when the upstream answered a websocket handshake with an HTTP error.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The downstream client disconnected while we were reading its request body."""


def strip_cookies(value: bytes, names: frozenset[bytes]) -> bytes:
    """A Cookie header without the cookies in `names` (the platform's own)."""
    parts = [p for p in value.split(b";") if p.strip().partition(b"=")[0] not in names]
    return b";".join(parts).strip()


def is_platform_credential(value: bytes, token_prefix: bytes) -> bool:
    """Does this Authorization value carry a platform token (Bearer TOKEN or Basic USER:TOKEN)?

    Decided by shape, not by a database lookup: every platform token starts with `token_prefix`, so
    revoked and mistyped ones are stripped too, and an app's own API keys (any other value) still pass.
    """
    scheme, _, credential = value.strip().partition(b" ")
    scheme, credential = scheme.lower(), credential.strip()
    if scheme == b"bearer":
        return credential.startswith(token_prefix)
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(credential, validate=False)
        except (ValueError, binascii.Error):
            return False
        return decoded.partition(b":")[2].startswith(token_prefix)
    return token_prefix in value  # unknown scheme: refuse to pass anything token-shaped


def upstream_headers(
    scope: MutableMapping[str, Any],
    drop_cookies: frozenset[bytes],
    websocket: bool,
    token_prefix: bytes = b"sp_",
) -> list[tuple[str, str]]:
    """Request headers for the upstream: hop-by-hop dropped, X-Forwarded-* set, and the platform's
    credentials removed (its cookies; Authorization / X-HF-Authorization carrying a platform token)."""
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    drop = set(HOP_BY_HOP)
    for key, value in raw:
        if key == b"connection":
            drop.update(token.strip().lower() for token in value.split(b","))
    if websocket:
        drop |= _WS_HANDSHAKE
    out: list[tuple[str, str]] = []
    host = b""
    prior_for = b""
    for key, value in raw:
        if key in drop:
            continue
        if key in _FORWARDED:
            if key == b"x-forwarded-for":
                prior_for = value
            continue
        if key == b"host":
            host = value
        elif key == b"cookie" and any(name in value for name in drop_cookies):
            value = strip_cookies(value, drop_cookies)
            if not value:
                continue
        elif key in CREDENTIAL_HEADERS and is_platform_credential(value, token_prefix):
            continue
        out.append((key.decode("latin-1"), value.decode("latin-1")))
    client = scope.get("client")
    client_ip = client[0] if client else ""
    prior = prior_for.decode("latin-1")
    # a front proxy (the HAProxy data plane) already put the client last, and uvicorn took it from there
    already = prior.rpartition(",")[2].strip() == client_ip
    forwarded_for = prior if prior and already else f"{prior}, {client_ip}" if prior else client_ip
    scheme = scope.get("scheme", "http")
    out.append(("X-Forwarded-For", forwarded_for))
    out.append(("X-Forwarded-Host", host.decode("latin-1")))
    out.append(("X-Forwarded-Proto", {"ws": "http", "wss": "https"}.get(scheme, scheme)))
    return out


def response_headers(resp: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones (including those named in Connection)."""
    raw = resp.raw_headers
    drop = HOP_BY_HOP
    for key, value in raw:
        if key.lower() == b"connection":
            drop = drop | {token.strip().lower() for token in value.split(b",")}
    return [(key.lower(), value) for key, value in raw if key.lower() not in drop]


def has_request_body(scope: MutableMapping[str, Any]) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return value.strip() != b"0"
        if key == b"transfer-encoding":
            return True
    return False


async def _request_body(receive: Receive, done: asyncio.Event, tick: Tick) -> AsyncIterator[bytes]:
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            body = message.get("body", b"")
            if body:
                tick()
                yield body
            if not message.get("more_body", False):
                return
    finally:
        done.set()


async def _wait_disconnect(receive: Receive, body_done: asyncio.Event) -> None:
    await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


async def _pump_body(resp: aiohttp.ClientResponse, send: Send, tick: Tick) -> bool:
    """Copy the upstream body downstream chunk by chunk; False if the upstream broke off.

    With a known length the last chunk carries more_body=False (one ASGI send fewer per response).
    """
    remaining = resp.content_length
    try:
        async for chunk in resp.content.iter_any():
            tick()
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    return True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, aiohttp.ClientError):
        return False
    if remaining:
        return False
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True


async def _pump_until_disconnect(
    resp: aiohttp.ClientResponse, receive: Receive, send: Send, body_done: asyncio.Event, tick: Tick
) -> None:
    """Stream an open-ended body (SSE, chunked) and stop as soon as the client goes away."""
    pump = asyncio.ensure_future(_pump_body(resp, send, tick))
    watch = asyncio.ensure_future(_wait_disconnect(receive, body_done))
    try:
        await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, watch):
            task.cancel()
        await asyncio.gather(pump, watch, return_exceptions=True)


async def forward_http(
    session: aiohttp.ClientSession,
    url: URL,
    scope: MutableMapping[str, Any],
    receive: Receive,
    send: Send,
    headers: list[tuple[str, str]],
    tick: Tick,
    fix_headers: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]] | None = None,
) -> None:
    """Send the request upstream streaming its body, and stream the answer back unbuffered.

    Raises UpstreamError if nothing was sent downstream yet and the upstream failed.
    """
    body_done = asyncio.Event()
    data = _request_body(receive, body_done, tick) if has_request_body(scope) else None
    if data is None:
        body_done.set()
    try:
        resp = await session.request(scope["method"], url, headers=headers, data=data, allow_redirects=False)
    except ClientGone:
        return
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(_describe(exc)) from exc
    async with resp:
        out_headers = response_headers(resp)
        if fix_headers is not None:
            out_headers = fix_headers(out_headers)
        await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif resp.content_length is not None:
            await _pump_body(resp, send, tick)
        else:
            await _pump_until_disconnect(resp, receive, send, body_done, tick)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to the app ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, TimeoutError):
        return "timed out connecting to the app"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the app closed the connection without answering"
    return f"the app did not answer ({type(exc).__name__}: {exc})"


def _subprotocols(scope: MutableMapping[str, Any]) -> list[str]:
    return list(scope.get("subprotocols") or [])


async def open_websocket(
    session: aiohttp.ClientSession, url: URL, scope: MutableMapping[str, Any], headers: list[tuple[str, str]]
) -> aiohttp.ClientWebSocketResponse:
    """Connect upstream; raises UpstreamError (with `.status` when the upstream refused the handshake)."""
    try:
        return await session.ws_connect(
            url,
            protocols=_subprotocols(scope),
            headers=headers,
            autoclose=True,
            autoping=True,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )
    except aiohttp.WSServerHandshakeError as exc:
        message = f"the app refused the websocket ({exc.status} {exc.message})"
        raise UpstreamError(message, exc.status) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(_describe(exc)) from exc


async def _client_to_upstream(receive: Receive, ws: aiohttp.ClientWebSocketResponse, tick: Tick) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await ws.send_str(text)
            else:
                await ws.send_bytes(message.get("bytes") or b"")
            tick()
        elif kind == "websocket.disconnect":
            code: int = message.get("code") or 1000
            await ws.close(code=_UNSENDABLE_CLOSE.get(code, code))
            return


async def _upstream_to_client(ws: aiohttp.ClientWebSocketResponse, send: Send, tick: Tick) -> None:
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": msg.data})
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": msg.data})
        else:
            code = ws.close_code or (msg.data if isinstance(msg.data, int) else 1000)
            reason = msg.extra if isinstance(msg.extra, str) else ""
            code = _UNSENDABLE_CLOSE.get(code, code)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code, "reason": reason})
            return
        tick()


async def relay_websocket(
    ws: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send, tick: Tick
) -> None:
    """Accept downstream with the upstream's chosen subprotocol and relay frames both ways until a close."""
    await send({"type": "websocket.accept", "subprotocol": ws.protocol})
    down = asyncio.ensure_future(_client_to_upstream(receive, ws, tick))
    up = asyncio.ensure_future(_upstream_to_client(ws, send, tick))
    try:
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
