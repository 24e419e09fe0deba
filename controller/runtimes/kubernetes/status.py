"""Pure interpretation of what the cluster reports: Deployment + its pods -> InstanceStatus; nodes ->
accelerator inventory."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from controller.domain.hardware import Catalog
from controller.runtimes.base import Endpoint, InstanceStatus, State
from controller.runtimes.kubernetes.objects import (
    LABELS_ANNOTATION,
    NAME_ANNOTATION,
    PAUSED_ANNOTATION,
)

JSON = dict[str, Any]
IMAGE_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"}


def instance_status(deployment: JSON, pods: Sequence[JSON], cluster_domain: str) -> InstanceStatus:
    meta = deployment.get("metadata", {})
    annotations = meta.get("annotations") or {}
    name = annotations.get(NAME_ANNOTATION, meta.get("name", ""))
    labels = _labels(annotations)
    replicas = int(deployment.get("spec", {}).get("replicas", 1) or 0)
    if replicas == 0:
        if annotations.get(PAUSED_ANNOTATION) == "freeze":
            return InstanceStatus(name, State.FROZEN, labels=labels, message="frozen (scaled to zero)")
        return InstanceStatus(name, State.EXITED, labels=labels, message="stopped (scaled to zero)")
    failed = _failed_container(pods)
    if failed is not None:
        code, message = failed
        return InstanceStatus(name, State.EXITED, exit_code=code, labels=labels, message=message)
    endpoint = Endpoint(_service_host(meta, cluster_domain), _port(deployment))
    message = _progress_message(deployment, pods)
    return InstanceStatus(name, State.RUNNING, endpoint=endpoint, labels=labels, message=message)


def _labels(annotations: Mapping[str, str]) -> dict[str, str]:
    try:
        value = json.loads(annotations.get(LABELS_ANNOTATION) or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _service_host(meta: Mapping[str, Any], cluster_domain: str) -> str:
    return f"{meta.get('name')}.{meta.get('namespace')}.svc.{cluster_domain}"


def _port(deployment: JSON) -> int:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return int(containers[0]["ports"][0]["containerPort"])


def _condition(conditions: Sequence[JSON] | None, type_: str) -> JSON | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def _progress_message(deployment: JSON, pods: Sequence[JSON]) -> str:
    status = deployment.get("status") or {}
    if int(status.get("readyReplicas") or 0) >= 1:
        return "ready"
    failure = _condition(status.get("conditions"), "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        return quota_or_failure_message(str(failure.get("message", "")))
    for pod in pods:
        scheduled = _condition((pod.get("status") or {}).get("conditions"), "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            return scheduling_message(str(scheduled.get("message", "")))
    return "starting: waiting for the app to answer its readiness probe" if pods else "starting"


def quota_or_failure_message(raw: str) -> str:
    if "exceeded quota" in raw:
        return (
            "pending: the owner's accelerator quota on the cluster is used up "
            f"({raw}). Free a device by pausing or sleeping another space, or ask an admin to raise "
            "the quota (spaceport quota set OWNER TYPE N)"
        )
    return f"pending: pods cannot be created: {raw}"


def scheduling_message(raw: str) -> str:
    insufficient = sorted({part.split("Insufficient ", 1)[1].strip(" .,") for part in raw.split(",")
                           if "Insufficient " in part})
    if insufficient:
        wanted = ", ".join(insufficient)
        return (
            f"pending: no node has a free {wanted} right now ({raw}). It starts when one is freed "
            "or a node is added"
        )
    return f"pending: waiting for a node ({raw})"


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


# ---- nodes ---------------------------------------------------------------------------------------


def inventory_from_nodes(nodes: Sequence[JSON], catalog: Catalog) -> dict[str, int]:
    """Allocatable devices per accelerator type, counting schedulable nodes whose labels match the
    type's node selector (T4 and A10G share `nvidia.com/gpu`; the GFD product label tells them apart)."""
    counts = {name: 0 for name in catalog.accelerators}
    for node in nodes:
        if (node.get("spec") or {}).get("unschedulable"):
            continue
        labels = (node.get("metadata") or {}).get("labels") or {}
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        for accel in catalog.accelerators.values():
            if all(labels.get(k) == v for k, v in accel.node_selector.items()):
                counts[accel.name] += _count(allocatable.get(accel.k8s_resource, 0))
    return counts


def _count(quantity: Any) -> int:
    try:
        return int(str(quantity))
    except ValueError:
        return 0
