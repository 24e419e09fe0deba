"""What keeps app content away from the platform: path-mode policy and response header filtering.

App responses never set the platform's cookies (whatever their Domain/Path attributes). Responses
served on the platform's origin (path-based URLs) additionally never register a service worker over
the platform (`Service-Worker-Allowed`) nor wipe its storage (`Clear-Site-Data`); in "sandboxed"
mode they carry a CSP sandbox (opaque origin) and set no cookies at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

PathMode = Literal["redirect", "sandboxed", "trusted"]
PATH_MODES: tuple[PathMode, ...] = ("redirect", "sandboxed", "trusted")

# No allow-same-origin: scripts run in an opaque origin and cannot read platform pages or cookies.
SANDBOX_CSP = b"sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals"
_PLATFORM_ORIGIN_ONLY = frozenset({b"service-worker-allowed", b"clear-site-data"})
_COOKIE_PREFIXES = (b"__host-", b"__secure-")

Headers = list[tuple[bytes, bytes]]


def cookie_names(names: Iterable[str]) -> frozenset[bytes]:
    """Cookie names as the request and response filters compare them (lower case: see set_cookie_name)."""
    return frozenset(n.lower().encode() for n in names)


def set_cookie_name(value: bytes) -> bytes:
    """The cookie name a Set-Cookie value sets, lower-cased and without a __Host-/__Secure- prefix."""
    name = value.partition(b";")[0].partition(b"=")[0].strip().lower()
    for prefix in _COOKIE_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def route_headers(headers: Iterable[tuple[str, str]], embeddable: bool, platform_origin: str) -> Headers:
    """What a route adds to each app response: its README's custom headers (allowed ones only, see
    controller.domain.appheaders) and, when it disables embedding, a CSP that lets only the platform's
    own space page frame it (a second CSP header: browsers enforce both, the app's own stays in force)."""
    added = [(name.encode(), value.encode()) for name, value in headers]
    if not embeddable:
        added.append((b"content-security-policy", frame_ancestors(platform_origin).encode()))
    return added


def frame_ancestors(platform_origin: str) -> str:
    """The CSP a route that disables embedding adds: only the platform's own pages may frame the app
    (the HAProxy data plane adds the same value: controller.dataplane.haproxy)."""
    return f"frame-ancestors {platform_origin}" if platform_origin else "frame-ancestors 'none'"


def response_filter(
    platform_cookies: frozenset[bytes],
    *,
    on_platform_origin: bool,
    sandboxed: bool,
    rewrite_location: Callable[[bytes], bytes] | None,
    added: Sequence[tuple[bytes, bytes]] = (),
) -> Callable[[Headers], Headers]:
    """The per-response header fix-up (one pass): see the module docstring. `added` headers (route_headers)
    replace the app's own of the same name, except a CSP, which is added to the app's.

    `platform_cookies` are lower-case names (as `cookie_names` gives them)."""
    replaced = frozenset(key for key, _ in added if key != b"content-security-policy")

    def fix(headers: Headers) -> Headers:
        out: Headers = []
        for key, value in headers:
            if key in replaced:
                continue
            if key == b"set-cookie":
                if sandboxed or set_cookie_name(value) in platform_cookies:
                    continue
            elif key == b"location" and rewrite_location is not None:
                value = rewrite_location(value)
            elif on_platform_origin and key in _PLATFORM_ORIGIN_ONLY:
                continue
            out.append((key, value))
        out.extend(added)
        if sandboxed:
            out.append((b"content-security-policy", SANDBOX_CSP))
        return out

    return fix
