"""The data plane: a compiled proxy (HAProxy) carries running public spaces' traffic; Python steers it.

`front(settings, host, port, app)` is the one call `spaceport serve` makes: with HAProxy it listens on
`host:port`, the ASGI app moves to an internal loopback port (yielded), and every route change in the
app's RouteTable reaches HAProxy through the table's listener hook. Without it, the app keeps the port.
Path URLs (`/apps/OWNER/NAME/`) are carried by HAProxy only where SPACEPORT_PATH_APPS=trusted; the other
modes (redirect, sandboxed) stay with the Python proxy, which redirects or sandboxes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controller.config import Settings
from controller.dataplane.haproxy import HAPROXY, DataPlaneError, HAProxyProcess, Layout, frame_ancestors_fits
from controller.dataplane.plane import DataPlane

log = logging.getLogger(__name__)
POLL_INTERVAL = 2.0  # seconds between stats reads (activity, draining old servers, HAProxy alive)

__all__ = ["DataPlane", "DataPlaneError", "HAProxyProcess", "Layout", "front", "haproxy_installed"]


def haproxy_installed() -> bool:
    return os.access(HAPROXY, os.X_OK) or shutil.which("haproxy") is not None


def wanted(settings: Settings) -> bool:
    """Use HAProxy? ('auto' without it installed: no, with a one-line warning)."""
    if settings.data_plane == "python":
        return False
    if haproxy_installed():
        return True
    if settings.data_plane == "haproxy":
        raise DataPlaneError(f"SPACEPORT_DATA_PLANE=haproxy but {HAPROXY} is not installed: "
                             "apt-get install haproxy, or set SPACEPORT_DATA_PLANE=python")
    log.warning("HAProxy is not installed: the built-in Python proxy carries all app traffic "
                "(apt-get install haproxy for the faster data plane)")
    return False


@contextlib.contextmanager
def front(settings: Settings, host: str, port: int, app: Any) -> Iterator[tuple[str, int]]:
    """Run HAProxy on host:port in front of `app` (a create_app() result); yield where the app listens."""
    if not wanted(settings):
        yield host, port
        return
    layout = _layout(settings, host, port)
    haproxy = HAProxyProcess(layout, HAPROXY if os.access(HAPROXY, os.X_OK) else shutil.which("haproxy") or HAPROXY)
    haproxy.start()
    routes, activity = app.state.routes, app.state.reconciler.activity
    plane = DataPlane(haproxy, layout.apps_domain, activity.record, paths=settings.path_apps == "trusted")
    routes.listen(lambda space_id: plane.apply(space_id, routes.get(space_id)))
    plane.sync(routes.all())
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(plane, haproxy, routes, stop), name="dataplane", daemon=True)
    poller.start()
    log.info("data plane: HAProxy on %s:%s, Spaceport behind it on 127.0.0.1:%s", host, port, layout.python_port)
    try:
        yield "127.0.0.1", layout.python_port
    finally:
        stop.set()
        poller.join(5)
        haproxy.stop()


def _layout(settings: Settings, host: str, port: int) -> Layout:
    from controller.proxy.appauth import APP_COOKIE, app_cookie_secret
    from controller.services.accounts import TOKEN_PREFIX
    from controller.services.websession import SESSION_COOKIE
    from web.context import CSRF_COOKIE

    apps_domain = (settings.apps_domain or "localhost").lower().split(":")[0].strip(".")
    layout = Layout(bind_host=host, bind_port=port, python_port=_free_port(),
                    run_dir=settings.data_dir / f"haproxy-{port}",  # replicas sharing a data dir use other ports
                    apps_domain=apps_domain, platform_cookies=(SESSION_COOKIE, CSRF_COOKIE, APP_COOKIE),
                    token_prefix=TOKEN_PREFIX, app_cookie=APP_COOKIE,
                    app_cookie_secret=app_cookie_secret(settings.key), frame_ancestors=_frame_ancestors(settings))
    if layout.socket_fits:
        return layout
    return dataclasses.replace(layout, run_dir=Path(tempfile.mkdtemp(prefix="spaceport-haproxy-")))


def _frame_ancestors(settings: Settings) -> str:
    """The CSP the Python proxy adds for `disable_embedding` (its platform origin, as ProxyMiddleware derives
    it from PUBLIC_URL); "" when HAProxy's config cannot carry it as it is (then such routes stay on Python)."""
    from controller.proxy.isolation import frame_ancestors

    public_url = settings.public_url.rstrip("/")
    policy = frame_ancestors("/".join(public_url.split("/")[:3]) if "://" in public_url else "")
    if frame_ancestors_fits(policy):
        return policy
    log.warning("data plane: PUBLIC_URL %r gives no plain origin; spaces with disable_embedding stay on the "
                "Python proxy", settings.public_url)
    return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll(plane: DataPlane, haproxy: HAProxyProcess, routes: Any, stop: threading.Event) -> None:
    """Every POLL_INTERVAL: activity and draining from the stats; a dead HAProxy is restarted."""
    while not stop.wait(POLL_INTERVAL):
        try:
            if not haproxy.alive():
                log.error("data plane: HAProxy exited (code %s); restarting it",
                          haproxy.proc.returncode if haproxy.proc else None)
                haproxy.start()
                plane.resync_after_restart(routes.all())
            plane.poll()
        except (OSError, DataPlaneError) as exc:
            log.error("data plane: %s", exc)
