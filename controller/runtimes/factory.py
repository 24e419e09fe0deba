"""Choose and build the configured runtime (and the Docker client builds use)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.config import Settings
from controller.runtimes.base import Runtime

if TYPE_CHECKING:
    from controller.runtimes.kubernetes.objects import SiteConfig

log = logging.getLogger(__name__)
# owner -> {accelerator type: limit}: the quotas the Kubernetes runtime mirrors into ResourceQuotas
QuotaLookup = Callable[[str], Mapping[str, int]]


def docker_client(docker_host: str = "") -> Any:
    import docker

    return docker.DockerClient(base_url=docker_host or None, timeout=600)


def protected_paths(settings: Settings) -> list[Path]:
    """What an app must never see: the database, the platform key, repos, broker and logs.

    Other spaces' sources and venvs under artifacts/ are not bound into a sandbox at all; each app gets
    only its own source and venv, read-only.
    """
    data = settings.data_dir
    return [data / "spaceport.db", data / "spaceport.db-wal", data / "spaceport.db-shm", data / "secret.key",
            settings.repos_dir, settings.broker_dir, settings.logs_dir]


def kubernetes_site(settings: Settings) -> SiteConfig:
    """The Kubernetes runtime's site options, from the KUBERNETES_* settings (README.md)."""
    from controller.domain.hardware import load_catalog
    from controller.runtimes.kubernetes.objects import SiteConfig

    secrets = tuple(name.strip() for name in settings.kubernetes_image_pull_secrets.split(",") if name.strip())
    return SiteConfig(catalog=load_catalog(settings.hardware_catalog),
                      namespace_prefix=settings.kubernetes_namespace_prefix, image_pull_secrets=secrets,
                      runtime_class_name=settings.kubernetes_runtime_class or None,
                      storage_class=settings.kubernetes_storage_class or None)


def make_runtime(settings: Settings, quotas: QuotaLookup | None = None) -> Runtime:
    """The configured runtime. `quotas` (the caller reads them; runtimes never import services) is what
    the Kubernetes runtime mirrors into each owner namespace's ResourceQuota; without it none is made."""
    if settings.runtime == "local":
        from controller.runtimes.local import LocalRuntime

        return LocalRuntime(settings.runtime_dir, sandbox=settings.sandbox, protected_paths=protected_paths(settings),
                            egress_allow=settings.egress_allow)
    if settings.runtime == "docker":
        from controller.runtimes.docker import DockerRuntime, site_id

        return DockerRuntime(settings.docker_host or None, site=site_id(settings.data_dir),
                             egress_allow=settings.egress_allow, registry=settings.registry)
    from controller.runtimes.kubernetes.client import KubeClient
    from controller.runtimes.kubernetes.runtime import KubernetesRuntime

    return KubernetesRuntime(KubeClient.from_environment(), kubernetes_site(settings), quotas=quotas)


def untrusted_push_refusal(settings: Settings, runtime: Runtime) -> str | None:
    """Why non-admins may not push here (apps would run unsandboxed on the host), or None."""
    status = getattr(runtime, "sandbox_status", None)
    if settings.runtime != "local" or status is None or getattr(runtime, "sandboxed", False):
        return None
    warning = (
        f"SECURITY: apps would run UNSANDBOXED on this host ({status.reason}); any app could read Spaceport's "
        f"database and key and other spaces' secrets. Fix: {status.fix}."
    )
    log.warning("%s", warning)
    if settings.allow_unsandboxed:
        log.warning("SPACEPORT_ALLOW_UNSANDBOXED=true: accepting pushes from every user anyway.")
        return None
    return warning + " Until then only admins may push (or set SPACEPORT_ALLOW_UNSANDBOXED=true to trust every user)."
