"""The worker side of daemonless builds (SPACEPORT_IMAGE_BUILDER=buildah): a BuildahEngine for one build,
with its RUN steps contained (see builder/buildah.py for why chroot isolation needs this from outside).

As root (a worker on a host), buildah runs inside the same build network namespace, egress proxy and
cgroup that venv builds get (buildbox.BubblewrapBuildSandbox: its slot reaches only the proxy, which
tunnels to package index hosts only; the cgroup holds memory, pids and cpu), so RUN steps cannot reach
the host, the controller, the database, Redis or private ranges. Unprivileged (a pod), nothing can
create those namespaces: RUN steps then share the pod's network, and the worker pod's NetworkPolicy is
the boundary (k8s/README.md); the build log says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from builder.buildah import BUILDAH, BuildahEngine, missing_registry_message
from builder.errors import BUILD_ERROR, BuildFailure
from controller.config import Settings
from controller.runtimes import buildnet
from controller.runtimes.buildbox import JOIN_CGROUPS, NSENTER, SH, BubblewrapBuildSandbox, build_box_config

log = logging.getLogger(__name__)
PASSED_ENV = ("CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE", "STORAGE_DRIVER")


@contextlib.contextmanager
def open_buildah(settings: Settings, owner: str, log_line: Callable[[str], None]) -> Iterator[BuildahEngine]:
    """The engine for one build of `owner`; its network slot, proxy and cgroup are released afterwards."""
    if not settings.registry:
        raise BuildFailure(BUILD_ERROR, missing_registry_message())
    if not os.access(BUILDAH, os.X_OK):
        raise BuildFailure(BUILD_ERROR, "SPACEPORT_IMAGE_BUILDER=buildah, but buildah is not installed on this worker: "
                                        "ask the admin to install it (apt-get install buildah) or use IMAGE_BUILDER=docker")
    admin_env = tuple((k, v) for k, v in os.environ.items() if k in PASSED_ENV)
    if os.geteuid() != 0:
        warning = ("note: buildah runs unprivileged here: RUN steps share this worker's network; the worker's "
                   "network policy must keep them off the control plane")
        log.warning("%s (owner %s)", warning, owner)
        log_line(warning)
        yield BuildahEngine(registry=settings.registry, env=admin_env)
        return
    box = BubblewrapBuildSandbox(build_box_config(settings), owner, log_line)
    try:
        box.describe()  # sets up the uid, network slot, egress proxy and cgroup
        yield BuildahEngine(registry=settings.registry, wrap=containment(box), env=admin_env + proxy_env(box))
    finally:
        box.close()


def containment(box: BubblewrapBuildSandbox) -> tuple[str, ...]:
    """argv prefix: join the build's cgroup, then enter its network namespace."""
    head = (SH, "-c", JOIN_CGROUPS, "spaceport-build", *box.cgroup_procs, "--") if box.cgroup_procs else ()
    net = (NSENTER, f"--net={box.slot.netns_path}", "--") if box.slot is not None else ()
    return (*head, *net)


def proxy_env(box: BubblewrapBuildSandbox) -> tuple[tuple[str, str], ...]:
    if box.slot is None:
        return ()
    proxy = f"http://{box.slot.host_ip}:{buildnet.BUILD_PROXY_PORT}"
    return tuple((name, proxy) for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"))
