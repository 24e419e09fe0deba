"""The platform's own listener for apps on this host: a link-local address on the host's loopback (like a
cloud metadata service) where a sandboxed app may call the few platform endpoints it needs and nothing
else: ZeroGPU's device API (zero-* instances) and the OpenID provider's server-to-server endpoints
(hf_oauth instances). Its HTTP side is controller/api/listener.py; who may open it, controller/runtimes/netns.py.
"""

from __future__ import annotations

import os

from controller.config import Settings
from controller.domain import zerogpu as dz
from controller.runtimes import netns


def address(settings: Settings) -> tuple[str, int] | None:
    """Where the listener binds: nowhere when not root (no sandbox and no address to add: apps run on the
    host and reach PUBLIC_URL) or on Kubernetes (app pods are not on this host: operators give URLs that
    pods reach, ZEROGPU_DEVICE_API_URL and OAUTH_PROVIDER_URL)."""
    if os.geteuid() != 0 or settings.runtime == "kubernetes":
        return None
    return netns.LISTENER_ADDRESS, dz.listener_port(settings.key)


def base_url(settings: Settings) -> str | None:
    found = address(settings)
    return None if found is None else f"http://{found[0]}:{found[1]}"


def prepare() -> str | None:
    """The host side of the listener (its address on lo, the guard chain); what went wrong, or None."""
    missing = netns.tools_missing()
    if missing:
        return f"missing host tools: {', '.join(missing)}"
    try:
        netns.ensure_listener_address()
    except (netns.NetworkSetupError, OSError) as exc:
        return str(exc)
    return None
