"""KubernetesRuntime: the Runtime contract on a Kubernetes cluster.

- start: applies the owner's Namespace (refused if it exists but is not this installation's),
  ResourceQuota (if a quota lookup is given) and NetworkPolicy, then the instance's Deployment
  (replicas 1) and Service. Idempotent (server-side apply). The endpoint is the Service's cluster DNS
  name and the app port.
- stop and freeze both scale the Deployment to zero: the pod goes away and its CPU, memory and devices
  (and quota) are freed; Kubernetes cannot pause a container's processes in place. An annotation
  remembers which one it was, so status() reports EXITED after stop and FROZEN after freeze.
- thaw scales back to one: a fresh pod (in-memory state is lost), so thaw returns only once the pod
  passed its readiness probe and the app answers through its Service (the reconciler routes visitors
  to it as soon as thaw returns). If the pod fails, or is not healthy within the site's wake_timeout,
  thaw scales it to zero again with the reason and raises RuntimeFailure: status() then reports it
  EXITED with that reason, which the reconciler treats like a crash (restart with backoff).
- status/list read Deployments and their pods; a pod waiting for a device or blocked by the owner's
  ResourceQuota shows as RUNNING with a "Waiting ..." message that says why.
- remove deletes the Deployment and Service; the owner's namespace, quota and policy stay, and so does the
  space's storage claim (/data), which only prune_claims_sync deletes once no space's storage key names it.
Every list selects on this installation's site label. The official client is synchronous: every
call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp
from kubernetes.client.exceptions import ApiException

from controller.runtimes.base import Endpoint, InstanceSpec, InstanceStatus, RuntimeFailure, State
from controller.runtimes.kubernetes import objects
from controller.runtimes.kubernetes.client import JSON, KubeApi
from controller.runtimes.kubernetes.objects import (
    INSTANCE_LABEL,
    PAUSED_ANNOTATION,
    PERSISTENT,
    SITE_LABEL,
    STOP_REASON_ANNOTATION,
    STORAGE_LABEL,
    SiteConfig,
    instance_name,
    site_selector,
)
from controller.runtimes.kubernetes.status import health_path, instance_status, is_ready, service_endpoint

T = TypeVar("T")
QuotaLookup = Callable[[str], Mapping[str, int]]
Probe = Callable[[str], Awaitable[int | None]]
LIVE = (State.RUNNING, State.FROZEN)


def _instance_key(obj: JSON) -> tuple[str, str]:
    """(namespace, instance) of a pod or Service, by its instance label."""
    meta = obj["metadata"]
    return meta.get("namespace", ""), (meta.get("labels") or {}).get(INSTANCE_LABEL, "")


def _deployment_key(deployment: JSON) -> tuple[str, str]:
    return deployment["metadata"]["namespace"], deployment["metadata"]["name"]


async def http_probe(url: str) -> int | None:
    """The HTTP status the app answers on url, None when nothing answers (as the reconciler probes)."""
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                    session.get(url, allow_redirects=False) as response):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


class KubernetesRuntime:
    name = "kubernetes"

    def __init__(self, api: KubeApi, site: SiteConfig, quotas: QuotaLookup | None = None,
                 probe: Probe = http_probe) -> None:
        """`quotas(owner)` -> {accelerator type: limit}, mirrored into the owner's ResourceQuota (it may
        block: it runs in a worker thread). `probe(url)` -> HTTP status, how thaw health-checks."""
        self.api = api
        self.site = site
        self.quotas = quotas
        self.probe = probe

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except ApiException as exc:
            raise RuntimeFailure(f"Kubernetes API error {exc.status} {exc.reason}: {exc.body}") from exc

    async def start(self, spec: InstanceSpec) -> Endpoint:
        owner = objects.owner_of(spec.space_id)
        owned = objects.owner_objects(owner, None, self.site)  # validates the names before any call
        instance = objects.instance_objects(spec, self.site)
        await self._check_namespace(owned[0]["metadata"]["name"])
        if self.quotas is not None:
            limits = await asyncio.to_thread(self.quotas, owner)
            owned = objects.owner_objects(owner, limits, self.site)
        applied = [await self._call(self.api.apply, obj) for obj in owned + instance]
        return service_endpoint(next(obj for obj in applied if obj.get("kind") == "Service"), self.site.cluster_domain)

    async def _check_namespace(self, name: str) -> None:
        """Refuse to take over a namespace someone else made (another installation, an admin)."""
        found = await self._call(self.api.read_namespace, name)
        if found is None:
            return
        site = ((found.get("metadata") or {}).get("labels") or {}).get(SITE_LABEL)
        if site != self.site.site:
            whose = f"Spaceport site {site!r}" if site else "something other than Spaceport"
            raise RuntimeFailure(
                f"the namespace {name!r} already exists and belongs to {whose}, not to this site "
                f"({self.site.site!r}); Spaceport will not run apps in it. Delete or rename it, or set "
                "SPACEPORT_KUBERNETES_NAMESPACE_PREFIX to a prefix no other installation uses"
            )

    async def _find(self, name: str) -> JSON | None:
        selector = site_selector(self.site, **{INSTANCE_LABEL: instance_name(name)})
        found = await self._call(self.api.list_deployments, selector)
        return found[0] if found else None

    async def _require(self, name: str) -> JSON:
        deployment = await self._find(name)
        if deployment is None:
            raise RuntimeFailure(f"no instance {name!r} on the cluster")
        return deployment

    async def _scale(self, name: str, replicas: int, paused: str, reason: str = "") -> None:
        meta = (await self._require(name))["metadata"]
        annotations = {PAUSED_ANNOTATION: paused, STOP_REASON_ANNOTATION: reason}
        await self._call(self.api.scale, meta["name"], meta["namespace"], replicas, annotations)

    async def stop(self, name: str) -> None:
        if await self._find(name) is not None:
            await self._scale(name, 0, "stop")

    async def freeze(self, name: str) -> None:
        await self._scale(name, 0, "freeze")

    async def thaw(self, name: str) -> None:
        """Scale back to one and return once the new pod is healthy (see the module docstring)."""
        await self._scale(name, 1, "")
        try:
            await self._wait_healthy(name)
        except RuntimeFailure as exc:
            await self._scale(name, 0, "stop", str(exc))
            raise

    async def _wait_healthy(self, name: str) -> None:
        deadline = time.monotonic() + self.site.wake_timeout
        while True:
            deployment = await self._require(name)
            status = instance_status(deployment, await self._pods_of(deployment), self.site.cluster_domain)
            if status.state not in LIVE:
                raise RuntimeFailure(f"The app did not come back from light sleep: {status.message}")
            waiting = status.message  # why it is not serving yet, as of this check
            if is_ready(deployment) and status.endpoint is not None:
                answer = await self.probe(status.endpoint.url + health_path(deployment))
                if answer is not None and answer < 500:
                    return
                waiting = (f"its pod is ready but the app answers HTTP {answer} through its Service" if answer
                           else "its pod is ready but the app does not answer through its Service yet")
            if time.monotonic() >= deadline:
                why = f" ({waiting})" if waiting else ""
                raise RuntimeFailure(
                    f"The app did not come back from light sleep within {self.site.wake_timeout:.0f} s{why}.")
            await asyncio.sleep(self.site.poll_interval)

    async def remove(self, name: str) -> None:
        deployment = await self._find(name)
        if deployment is None:
            return
        meta = deployment["metadata"]
        await self._call(self.api.delete, "Deployment", meta["name"], meta["namespace"])
        await self._call(self.api.delete, "Service", meta["name"], meta["namespace"])

    def prune_claims_sync(self, keep: set[str], *, dry_run: bool = False) -> list[str]:
        """Delete this site's storage claims whose name is not in `keep` (the claims of every storage key a
        space holds); returns NAMESPACE/NAME of those deleted (with `dry_run`: of those it would delete,
        deleting none). Only claims with this site's label and the storage label are listed: another
        installation's, a pod's ephemeral ~/.cache claim, anything an admin made, are never touched."""
        wanted = {objects.dns_label(name) for name in keep}
        deleted = []
        for claim in self.api.list_claims(site_selector(self.site, **{STORAGE_LABEL: PERSISTENT})):
            meta = claim["metadata"]
            labels = meta.get("labels") or {}
            if labels.get(SITE_LABEL) != self.site.site or labels.get(STORAGE_LABEL) != PERSISTENT:
                continue  # the selector already says so; never trust a list to have honoured it
            if meta["name"] in wanted:
                continue
            if dry_run or self.api.delete("PersistentVolumeClaim", meta["name"], meta["namespace"]):
                deleted.append(f"{meta['namespace']}/{meta['name']}")
        return deleted

    def _selector_of(self, deployment: JSON) -> str:
        return site_selector(self.site, **{INSTANCE_LABEL: deployment["metadata"]["name"]})

    async def _pods_of(self, deployment: JSON) -> list[JSON]:
        return await self._call(self.api.list_pods, self._selector_of(deployment), deployment["metadata"]["namespace"])

    async def _service_of(self, deployment: JSON) -> JSON | None:
        found = await self._call(self.api.list_services, self._selector_of(deployment),
                                 deployment["metadata"]["namespace"])
        return found[0] if found else None

    async def status(self, name: str) -> InstanceStatus:
        deployment = await self._find(name)
        if deployment is None:
            return InstanceStatus(name, State.MISSING)
        return instance_status(deployment, await self._pods_of(deployment), self.site.cluster_domain,
                               await self._service_of(deployment))

    async def list(self) -> list[InstanceStatus]:
        """This installation's instances only (site label), across its owner namespaces."""
        deployments = await self._call(self.api.list_deployments, site_selector(self.site))
        pods = await self._call(self.api.list_pods, site_selector(self.site), None)
        services = {_instance_key(s): s for s in await self._call(self.api.list_services, site_selector(self.site), None)}
        by_instance: dict[tuple[str, str], list[JSON]] = {}
        for pod in pods:
            by_instance.setdefault(_instance_key(pod), []).append(pod)
        return [
            instance_status(d, by_instance.get(_deployment_key(d), []), self.site.cluster_domain,
                            services.get(_deployment_key(d)))
            for d in deployments
        ]

    async def logs(self, name: str, follow: bool) -> AsyncIterator[str]:
        deployment = await self._require(name)
        pods = sorted(await self._pods_of(deployment), key=lambda p: p["metadata"].get("creationTimestamp") or "")
        if not pods:
            return
        meta = pods[-1]["metadata"]
        lines: Iterator[str] = await self._call(self.api.pod_logs, meta["name"], meta["namespace"], follow)
        while True:
            line = await self._call(next, lines, None)
            if line is None:
                return
            yield line
