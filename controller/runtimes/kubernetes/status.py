"""Pure interpretation of what the cluster reports: Deployment + its pods -> InstanceStatus."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from controller.runtimes.base import Endpoint, InstanceStatus, State
from controller.runtimes.kubernetes.objects import (
    LABELS_ANNOTATION,
    NAME_ANNOTATION,
    PAUSED_ANNOTATION,
    STOP_REASON_ANNOTATION,
)

JSON = dict[str, Any]
IMAGE_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"}


def instance_status(deployment: JSON, pods: Sequence[JSON], cluster_domain: str,
                    service: JSON | None = None) -> InstanceStatus:
    """`service`: the instance's Service as the API server reports it (its ClusterIP is the endpoint)."""
    meta = deployment.get("metadata", {})
    annotations = meta.get("annotations") or {}
    name = annotations.get(NAME_ANNOTATION, meta.get("name", ""))
    labels = _labels(annotations)
    replicas = int(deployment.get("spec", {}).get("replicas", 1) or 0)
    if replicas == 0:
        if annotations.get(PAUSED_ANNOTATION) == "freeze":
            return InstanceStatus(name, State.FROZEN, labels=labels, message="frozen (scaled to zero)")
        reason = annotations.get(STOP_REASON_ANNOTATION) or "stopped (scaled to zero)"
        return InstanceStatus(name, State.EXITED, labels=labels, message=reason)
    failed = _failed_container(pods)
    if failed is not None:
        code, message = failed
        return InstanceStatus(name, State.EXITED, exit_code=code, labels=labels, message=message)
    endpoint = (service_endpoint(service, cluster_domain) if service
                else Endpoint(_service_host(meta, cluster_domain), _port(deployment)))
    message = _progress_message(deployment, pods)
    return InstanceStatus(name, State.RUNNING, endpoint=endpoint, labels=labels, message=message)


def _labels(annotations: Mapping[str, str]) -> dict[str, str]:
    try:
        value = json.loads(annotations.get(LABELS_ANNOTATION) or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def service_endpoint(service: JSON, cluster_domain: str) -> Endpoint:
    """Where the instance answers: its Service's ClusterIP (its DNS name while it has none) and port."""
    host = service_address(service) or _service_host(service.get("metadata", {}), cluster_domain)
    return Endpoint(host, int(service["spec"]["ports"][0]["port"]))


def service_address(service: JSON) -> str | None:
    """The ClusterIP the API server gave the app's Service (None for a headless one, or none yet).

    Routes go to this address rather than to the Service's DNS name: it is the same virtual IP the name
    resolves to, stable for the Service's life (sleep and wake scale the Deployment, the Service stays), and
    HAProxy's runtime-added servers take addresses only, so the data plane can carry the space itself."""
    address = str((service.get("spec") or {}).get("clusterIP") or "")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None  # "None" (headless) or not allocated
    return address


def _service_host(meta: Mapping[str, Any], cluster_domain: str) -> str:
    return f"{meta.get('name')}.{meta.get('namespace')}.svc.{cluster_domain}"


def _port(deployment: JSON) -> int:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return int(containers[0]["ports"][0]["containerPort"])


def health_path(deployment: JSON) -> str:
    """The path the pod's readiness probe asks (the app's health path)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return str(((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path") or "/")


def _condition(conditions: Sequence[JSON] | None, type_: str) -> JSON | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def is_ready(deployment: JSON) -> bool:
    """The Deployment has a pod that passed its readiness probe (an HTTP GET of the health path)."""
    return int((deployment.get("status") or {}).get("readyReplicas") or 0) >= 1


def _progress_message(deployment: JSON, pods: Sequence[JSON]) -> str:
    """Why a wanted pod does not run yet, from the fields a real API server fills in ("" when ready or
    just starting: like the other runtimes, a live instance only has a message when something is wrong).

    A pod refused by the namespace's ResourceQuota is never created: the ReplicaSet controller records
    the admission error as its ReplicaFailure condition (reason FailedCreate), which the Deployment
    controller copies into the Deployment's status. A pod no node can take stays Pending with the
    scheduler's PodScheduled=False condition (reason Unschedulable)."""
    if is_ready(deployment):
        return ""
    failure = _condition((deployment.get("status") or {}).get("conditions"), "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        return quota_or_failure_message(str(failure.get("message", "")))
    for pod in pods:
        scheduled = _condition((pod.get("status") or {}).get("conditions"), "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            return scheduling_message(str(scheduled.get("message", "")))
    return ""


QUOTA_EXCEEDED = re.compile(r"exceeded quota: ([\w.-]+)", re.IGNORECASE)
INSUFFICIENT = re.compile(r"Insufficient ([\w./-]*[\w/-])")


def quota_or_failure_message(raw: str) -> str:
    if QUOTA_EXCEEDED.search(raw):
        return (
            "Waiting: the owner's accelerator quota on the cluster is used up "
            f"({raw}). Free a device by pausing or sleeping another space of this owner, or ask an admin "
            "to raise the quota (spaceport quota set OWNER TYPE N)."
        )
    return f"Waiting: the cluster refuses to create the app's pod: {raw}"


def scheduling_message(raw: str) -> str:
    """The scheduler's message names each reason with the number of nodes it ruled out, e.g.
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: ..."."""
    summary = raw.split(" preemption:", 1)[0].strip()
    insufficient = sorted(set(INSUFFICIENT.findall(summary)))
    if insufficient:
        wanted = ", ".join(insufficient)
        return (
            f"Waiting for a free {wanted}: no node of the cluster has one free right now ({summary}). The "
            "space starts when one is freed or a node is added."
        )
    return f"Waiting for a node that can run the app ({summary})."


def _failed_container(pods: Sequence[JSON]) -> tuple[int | None, str] | None:
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            found = _container_failure(cs)
            if found is not None:
                return found
    return None


def _container_failure(cs: JSON) -> tuple[int | None, str] | None:
    state = cs.get("state") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason", "")
    if reason in IMAGE_ERRORS:
        return None, f"{reason}: {waiting.get('message', '')}".strip(": ")
    if reason == "CrashLoopBackOff":
        last = (cs.get("lastState") or {}).get("terminated") or {}
        code = last.get("exitCode")
        return (int(code) if code is not None else None), f"the app keeps exiting (exit code {code}); see its logs"
    terminated = state.get("terminated")
    if terminated:
        code = int(terminated.get("exitCode", 0))
        return code, f"the app exited with code {code} ({terminated.get('reason', '')})"
    return None
