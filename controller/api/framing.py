"""Clickjacking defence: platform pages and API answers may not be framed by any site (including ours).

Sits inside the app proxy, so responses of apps (on their host URLs, and path-based ones) never get these
headers: the space page embeds the app's host URL in an iframe and that must keep working.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FRAME_ANCESTORS = b"frame-ancestors 'none'"


def _guarded(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = [(k, v) for k, v in headers if k.lower() != b"x-frame-options"]
    out.append((b"x-frame-options", b"DENY"))
    csp = [i for i, (k, _) in enumerate(out) if k.lower() == b"content-security-policy"]
    if not csp:
        out.append((b"content-security-policy", FRAME_ANCESTORS))
    for i in csp:  # a page's own policy keeps its directives, with ours added (or replacing theirs)
        key, value = out[i]
        kept = [d for d in value.split(b";") if d.strip() and not d.strip().lower().startswith(b"frame-ancestors")]
        out[i] = (key, b"; ".join([*(d.strip() for d in kept), FRAME_ANCESTORS]))
    return out


class FrameGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _guarded(list(message.get("headers", [])))}
            await send(message)

        await self.app(scope, receive, guarded_send)
