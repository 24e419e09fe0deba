"""The site's security posture in a few lines, logged by `spaceport serve` at start (and shown to admins).

It says how untrusted code is contained (apps and builds), whether app content is kept off the
platform's origin, and what apps and builds may reach on the network, with the setting that changes each.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from controller.config import Settings
from controller.runtimes.base import Runtime
from controller.runtimes.buildbox import allow_hosts, build_sandbox_status


def security_posture(settings: Settings, runtime: Runtime) -> list[str]:
    """One line per concern, each prefixed with OK or WARNING."""
    return [_apps(settings, runtime), _builds(settings), _origin(settings), _egress(settings)]


def _apps(settings: Settings, runtime: Runtime) -> str:
    if settings.runtime == "local":
        status = getattr(runtime, "sandbox_status", None)
        if getattr(runtime, "sandboxed", False) and status is not None:
            return f"OK apps: {status.reason}"
        reason = status.reason if status is not None else "no sandbox"
        return f"WARNING apps: run UNSANDBOXED on this host ({reason}); only admins may push unless SPACEPORT_ALLOW_UNSANDBOXED=true"
    if settings.runtime == "docker":
        return "OK apps: docker containers as uid 1000, resource limits, on the spaceport-apps network (no inter-app traffic)"
    return "OK apps: Kubernetes pods in per-owner namespaces (the cluster's policies apply)"


def _builds(settings: Settings) -> str:
    if settings.runtime != "local":
        return (f"OK builds: image builds' RUN steps in containers on the {settings.build_network} network, "
                f"{settings.build_memory_mb} MB, {settings.build_cpus:g} CPUs")
    status = build_sandbox_status()
    if settings.sandbox != "none" and status.available:
        return "OK builds: owner code (requirements, build backends) runs in a bubblewrap sandbox as a per-owner uid"
    return f"WARNING builds: run UNSANDBOXED on this host ({status.reason if settings.sandbox != 'none' else 'SPACEPORT_SANDBOX=none'})"


def _origin(settings: Settings) -> str:
    site = (urlsplit(settings.public_url).hostname or "localhost").lower() if settings.public_url else "localhost"
    apps = settings.apps_domain.split(":")[0].strip(".").lower() or "localhost"
    where = f"apps on their own hosts (OWNER-NAME.{apps}), platform on {site}"
    if settings.path_apps == "trusted":
        return (f"WARNING app origin: {where}, but SPACEPORT_PATH_APPS=trusted serves /apps/... URLs on the "
                "platform's origin, where app scripts act as their visitors; use 'redirect' unless every owner is trusted")
    path_mode = {"redirect": "path URLs redirect there", "sandboxed": "path URLs get a CSP sandbox"}[settings.path_apps]
    if apps != "localhost" and apps.split(".")[-2:] == site.split(".")[-2:]:
        return (f"WARNING app origin: {where} ({path_mode}), but APPS_DOMAIN shares a parent domain with the "
                "platform, so apps can set cookies the platform receives: serve apps from a domain of their own "
                "(like hf.space next to huggingface.co)")
    return f"OK app origin: {where} ({path_mode})"


def _egress(settings: Settings) -> str:
    opened = settings.egress_allow.strip() or "none"
    hosts = ", ".join(allow_hosts(settings.build_egress_allow))
    return (f"OK egress: apps reach the internet but no private, loopback, link-local, CGNAT or ULA address "
            f"(opened by SPACEPORT_EGRESS_ALLOW: {opened}); local builds reach only {hosts}")
