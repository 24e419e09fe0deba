"""Small responses the proxy answers itself: 404, 502, 503 (paused, unavailable, waking up).

Messages are shown as plain text with their line breaks (a failing app's cause, then its last log lines);
they come from the stage message, which is stored with the space's secrets masked."""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

STATUS_SUFFIX = "/__spaceport__/status"

_WAKING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title} is waking up</title>
<style>body{{font-family:system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;color:#333}}
main{{text-align:center;max-width:48rem}}#status{{white-space:pre-wrap;overflow-wrap:anywhere}}.spin{{width:2rem;height:2rem;border:.25rem solid #ddd;
border-top-color:#f59e0b;border-radius:50%;animation:s 1s linear infinite;margin:1rem auto}}
@keyframes s{{to{{transform:rotate(360deg)}}}}</style></head>
<body><main><div class="spin"></div><h1>{title} is waking up</h1>
<p id="status">{message}</p><p><small>This page reloads by itself when the app is running.</small></p>
</main><script>
(function poll(){{
  fetch({status_url}, {{cache: "no-store", credentials: "same-origin"}})
    .then(function(r){{ return r.json(); }})
    .then(function(s){{
      if (s.state === "ready") {{ location.reload(); return; }}
      document.getElementById("status").textContent = s.message || s.state;
      if (s.state === "paused" || s.state === "unavailable") {{ setTimeout(poll, 5000); return; }}
      setTimeout(poll, 1000);
    }})
    .catch(function(){{ setTimeout(poll, 2000); }});
}})();
</script></body></html>
"""

_MESSAGE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;color:#333}}
main{{text-align:center;max-width:48rem}}p{{white-space:pre-wrap;overflow-wrap:anywhere}}</style></head>
<body><main><h1>{title}</h1><p>{message}</p></main></body></html>
"""


async def respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, data: dict[str, Any], retry_after: int | None = None) -> None:
    extra = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else None
    await respond(send, status, json.dumps(data).encode(), b"application/json", extra)


async def respond_error(
    send: Send, status: int, title: str, message: str, as_html: bool, retry_after: int | None = None
) -> None:
    """An error as an HTML page for browsers or `{"error": ...}` JSON for API clients."""
    if not as_html:
        await respond_json(send, status, {"error": title, "message": message}, retry_after)
        return
    page = _MESSAGE_PAGE.format(title=html.escape(title), message=html.escape(message))
    extra = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else None
    await respond(send, status, page.encode(), b"text/html; charset=utf-8", extra)


async def respond_waking(send: Send, space_id: str, message: str, status_url: str) -> None:
    """503 + Retry-After "waking up" page that polls `status_url` and reloads once the route is ready."""
    page = _WAKING_PAGE.format(
        title=html.escape(space_id),
        message=html.escape(message or "Starting the app..."),
        status_url=json.dumps(status_url).replace("<", "\\u003c"),
    )
    await respond(send, 503, page.encode(), b"text/html; charset=utf-8", [(b"retry-after", b"5")])
