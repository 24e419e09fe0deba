"""KubernetesRuntime: the Runtime contract on a Kubernetes cluster.

- start: applies the owner's Namespace, ResourceQuota (if a quota lookup is given) and NetworkPolicy,
  then the instance's Deployment (replicas 1) and Service. Idempotent (server-side apply). The endpoint
  is the Service's cluster DNS name and the app port.
- stop and freeze both scale the Deployment to zero: the pod goes away and its CPU, memory and devices
  (and quota) are freed; Kubernetes cannot pause a container's processes in place. An annotation
  remembers which one it was, so status() reports EXITED after stop and FROZEN after freeze.
  thaw scales back to one (a fresh pod: in-memory state is lost).
- status/list read Deployments and their pods; a pod waiting for a device or blocked by the owner's
  ResourceQuota shows as RUNNING with a "pending: ..." message that says why.
- remove deletes the Deployment and Service; the owner's namespace, quota and policy stay.
The official client is synchronous: every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from controller.runtimes.base import Endpoint, InstanceSpec, InstanceStatus, RuntimeFailure, State
from controller.runtimes.kubernetes import objects
from controller.runtimes.kubernetes.client import JSON, KubeApi
from controller.runtimes.kubernetes.objects import (
    INSTANCE_LABEL,
    MANAGED_BY,
    PAUSED_ANNOTATION,
    SiteConfig,
    instance_name,
)
from controller.runtimes.kubernetes.status import instance_status, inventory_from_nodes

T = TypeVar("T")
QuotaLookup = Callable[[str], Mapping[str, int]]
MANAGED_SELECTOR = f"{MANAGED_BY}=spaceport"


class KubernetesRuntime:
    name = "kubernetes"

    def __init__(self, api: KubeApi, site: SiteConfig, quotas: QuotaLookup | None = None) -> None:
        """`quotas(owner)` -> {accelerator type: limit}, mirrored into the owner's ResourceQuota."""
        self.api = api
        self.site = site
        self.quotas = quotas

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except ApiException as exc:
            raise RuntimeFailure(f"Kubernetes API error {exc.status} {exc.reason}: {exc.body}") from exc

    async def start(self, spec: InstanceSpec) -> Endpoint:
        owner = objects.owner_of(spec.space_id)
        artifact = objects.image_artifact(spec)
        quotas = self.quotas(owner) if self.quotas is not None else None
        for obj in objects.owner_objects(owner, quotas, self.site) + objects.instance_objects(spec, self.site):
            await self._call(self.api.apply, obj)
        return Endpoint(objects.service_host(spec.name, owner, self.site), artifact.port)

    async def _find(self, name: str) -> JSON | None:
        found = await self._call(self.api.list_deployments, f"{INSTANCE_LABEL}={instance_name(name)}")
        return found[0] if found else None

    async def _require(self, name: str) -> JSON:
        deployment = await self._find(name)
        if deployment is None:
            raise RuntimeFailure(f"no instance {name!r} on the cluster")
        return deployment

    async def _scale(self, name: str, replicas: int, paused: str) -> None:
        meta = (await self._require(name))["metadata"]
        await self._call(self.api.scale, meta["name"], meta["namespace"], replicas, {PAUSED_ANNOTATION: paused})

    async def stop(self, name: str) -> None:
        if await self._find(name) is not None:
            await self._scale(name, 0, "stop")

    async def freeze(self, name: str) -> None:
        await self._scale(name, 0, "freeze")

    async def thaw(self, name: str) -> None:
        await self._scale(name, 1, "")

    async def remove(self, name: str) -> None:
        deployment = await self._find(name)
        if deployment is None:
            return
        meta = deployment["metadata"]
        await self._call(self.api.delete, "Deployment", meta["name"], meta["namespace"])
        await self._call(self.api.delete, "Service", meta["name"], meta["namespace"])

    async def _pods_of(self, deployment: JSON) -> list[JSON]:
        meta = deployment["metadata"]
        return await self._call(self.api.list_pods, f"{INSTANCE_LABEL}={meta['name']}", meta["namespace"])

    async def status(self, name: str) -> InstanceStatus:
        deployment = await self._find(name)
        if deployment is None:
            return InstanceStatus(name, State.MISSING)
        return instance_status(deployment, await self._pods_of(deployment), self.site.cluster_domain)

    async def list(self) -> list[InstanceStatus]:
        deployments = await self._call(self.api.list_deployments, MANAGED_SELECTOR)
        pods = await self._call(self.api.list_pods, MANAGED_SELECTOR, None)
        by_instance: dict[tuple[str, str], list[JSON]] = {}
        for pod in pods:
            meta = pod["metadata"]
            key = (meta.get("namespace", ""), (meta.get("labels") or {}).get(INSTANCE_LABEL, ""))
            by_instance.setdefault(key, []).append(pod)
        return [
            instance_status(d, by_instance.get((d["metadata"]["namespace"], d["metadata"]["name"]), []),
                            self.site.cluster_domain)
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

    async def inventory(self) -> dict[str, int]:
        """Allocatable devices per accelerator type on schedulable nodes (for the admin's inventory)."""
        return inventory_from_nodes(await self._call(self.api.list_nodes), self.site.catalog)
