"""A fake cluster at the level of our `KubeApi` wrapper (no API server can run here).

It stores what the runtime applies and plays only the mechanical parts of the controllers: a
Deployment with N replicas gets N pods (a changed template replaces them, Recreate), and
`status.readyReplicas` counts the pods whose Ready condition is True. It never makes up what a real
cluster would say: every pod is Running and Ready unless the test hands in the statuses a real API
server returns (`pod_statuses`, built from the official client's models, e.g. the scheduler's
PodScheduled=False/Unschedulable condition), and pod creation fails only when the test hands in the
ReplicaFailure condition the Deployment controller copies from its ReplicaSet (`replica_failures`).
Reads are recorded (`calls`) with their label selectors, so tests can check every list is scoped.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s

JSON = dict[str, Any]
INSTANCE = "spaceport.instance"
_SERIALIZER = k8s.ApiClient()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def plain(model: Any) -> JSON:
    """A client model as the JSON an API server sends (what KubeClient hands the runtime)."""
    return dict(_SERIALIZER.sanitize_for_serialization(model))


def running_ready() -> JSON:
    """What the kubelet reports for a started pod whose readiness probe passed."""
    return plain(k8s.V1PodStatus(
        phase="Running",
        conditions=[k8s.V1PodCondition(type=t, status="True", last_transition_time=T0)
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        container_statuses=[k8s.V1ContainerStatus(
            name="app", image="img", image_id="", ready=True, restart_count=0, started=True,
            state=k8s.V1ContainerState(running=k8s.V1ContainerStateRunning(started_at=T0)))],
    ))


def running_not_ready() -> JSON:
    """Started, but the readiness probe has not passed yet (the app is still loading)."""
    return plain(k8s.V1PodStatus(
        phase="Running",
        conditions=[
            k8s.V1PodCondition(type="PodScheduled", status="True"),
            k8s.V1PodCondition(type="ContainersReady", status="False", reason="ContainersNotReady",
                               message="containers with unready status: [app]"),
            k8s.V1PodCondition(type="Ready", status="False", reason="ContainersNotReady",
                               message="containers with unready status: [app]"),
        ],
        container_statuses=[k8s.V1ContainerStatus(
            name="app", image="img", image_id="", ready=False, restart_count=0, started=True,
            state=k8s.V1ContainerState(running=k8s.V1ContainerStateRunning(started_at=T0)))],
    ))


def unschedulable(message: str) -> JSON:
    """A Pending pod as the scheduler leaves it when no node fits (`message` is the scheduler's text)."""
    return plain(k8s.V1PodStatus(phase="Pending", qos_class="Guaranteed", conditions=[
        k8s.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable", message=message,
                           last_transition_time=T0)]))


def crash_looping(exit_code: int) -> JSON:
    return plain(k8s.V1PodStatus(phase="Running", container_statuses=[k8s.V1ContainerStatus(
        name="app", image="img", image_id="", ready=False, restart_count=3,
        state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(
            reason="CrashLoopBackOff", message="back-off 40s restarting failed container=app")),
        last_state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
            exit_code=exit_code, reason="Error")))]))


def failed_create(message: str) -> JSON:
    """The Deployment condition of pods the API refused to create (e.g. by a ResourceQuota)."""
    return plain(k8s.V1DeploymentCondition(type="ReplicaFailure", status="True", reason="FailedCreate",
                                           message=message, last_update_time=T0, last_transition_time=T0))


def _matches(labels: dict[str, str] | None, selector: str) -> bool:
    wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
    return all((labels or {}).get(k) == v for k, v in wanted.items())


def _ready(pod: JSON) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod["status"].get("conditions") or [])


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.pods: dict[tuple[str, str], JSON] = {}
        self.logs: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        # instance name -> the statuses its pods report, one per Deployment read (the last one stays)
        self.pod_statuses: dict[str, list[JSON]] = {}
        # instance name -> the ReplicaFailure condition its Deployment reports (no pod is created)
        self.replica_failures: dict[str, JSON] = {}
        self._queues: dict[tuple[str, str], list[JSON]] = {}  # pod -> its next statuses
        self._seq = 0
        self.allocated = 0  # Service ClusterIPs handed out

    # ---- KubeApi ----

    def apply(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        self.calls.append(("apply", f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"))
        if obj["kind"] != "Namespace" and ("Namespace", "", meta.get("namespace", "")) not in self.objects:
            raise AssertionError(f"namespace {meta.get('namespace')} applied after {obj['kind']}")
        stored = copy.deepcopy(obj)
        stored["status"] = copy.deepcopy(self.objects.get(key, {}).get("status", {}))
        if obj["kind"] == "Service":
            stored["spec"].setdefault("clusterIP", self._cluster_ip(key))
        self.objects[key] = stored
        self._reconcile()
        return copy.deepcopy(stored)

    def _cluster_ip(self, key: tuple[str, str, str]) -> str:
        """What the API server's allocator does for a Service with no clusterIP: keep the one it has,
        else take the next free address of the service range (10.96.0.0/12 by default)."""
        kept = self.objects.get(key, {}).get("spec", {}).get("clusterIP")
        if kept:
            return str(kept)
        self.allocated += 1
        return str(ipaddress.ip_address("10.96.0.10") + self.allocated)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        self.calls.append(("delete", f"{kind}/{namespace or ''}/{name}"))
        gone = self.objects.pop((kind, namespace or "", name), None)
        self._reconcile()
        return gone is not None

    def scale(self, name: str, namespace: str, replicas: int, annotations: dict[str, str]) -> JSON:
        self.calls.append(("scale", f"Deployment/{namespace}/{name}={replicas}"))
        deployment = self.objects[("Deployment", namespace, name)]
        deployment["spec"]["replicas"] = replicas
        deployment["metadata"].setdefault("annotations", {}).update(annotations)
        self._reconcile()
        return copy.deepcopy(deployment)

    def read_deployment(self, name: str, namespace: str) -> JSON | None:
        found = self.objects.get(("Deployment", namespace, name))
        return copy.deepcopy(found) if found else None

    def read_namespace(self, name: str) -> JSON | None:
        self.calls.append(("read_namespace", name))
        found = self.objects.get(("Namespace", "", name))
        return copy.deepcopy(found) if found else None

    def list_deployments(self, label_selector: str) -> list[JSON]:
        self.calls.append(("list_deployments", label_selector))
        self._tick()
        return [copy.deepcopy(o) for (kind, _, _), o in sorted(self.objects.items())
                if kind == "Deployment" and _matches(o["metadata"].get("labels"), label_selector)]

    def list_pods(self, label_selector: str, namespace: str | None = None) -> list[JSON]:
        self.calls.append(("list_pods", label_selector))
        return [copy.deepcopy(p) for (ns, _), p in sorted(self.pods.items())
                if (namespace is None or ns == namespace) and _matches(p["metadata"]["labels"], label_selector)]

    def list_services(self, label_selector: str, namespace: str | None = None) -> list[JSON]:
        self.calls.append(("list_services", label_selector))
        return [copy.deepcopy(o) for (kind, ns, _), o in sorted(self.objects.items())
                if kind == "Service" and (namespace is None or ns == namespace)
                and _matches(o["metadata"].get("labels"), label_selector)]

    def list_claims(self, label_selector: str) -> list[JSON]:
        self.calls.append(("list_claims", label_selector))
        return [copy.deepcopy(o) for (kind, _, _), o in sorted(self.objects.items())
                if kind == "PersistentVolumeClaim" and _matches(o["metadata"].get("labels"), label_selector)]

    def pod_logs(self, name: str, namespace: str, follow: bool, tail_lines: int | None = None) -> Iterator[str]:
        assert (namespace, name) in self.pods, f"no pod {namespace}/{name}"
        yield from list(self.logs.get(name, [f"{name} started"]))

    # ---- helpers for tests ----

    def get(self, kind: str, namespace: str, name: str) -> JSON:
        return self.objects[(kind, namespace, name)]

    def kinds(self) -> list[str]:
        return sorted(f"{k}/{ns}/{n}" for k, ns, n in self.objects)

    def selectors(self) -> list[str]:
        return [target for verb, target in self.calls if verb.startswith("list_")]

    def put(self, obj: JSON) -> None:
        """Store an object someone else made (another installation, an admin), bypassing apply."""
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = {"status": {}, **copy.deepcopy(obj)}
        self._reconcile()

    # ---- the simulated controllers ----

    def _tick(self) -> None:
        """Time passes between reads: pods move on to their next handed-in status."""
        for key, pod in self.pods.items():
            queue = self._queues.get(key)
            if queue:
                pod["status"] = queue.pop(0)
        self._reconcile()

    def _reconcile(self) -> None:
        for (kind, ns, name), deployment in sorted(self.objects.items()):
            if kind == "Deployment":
                self._replicaset(ns, name, deployment)
        self._drop_orphans()
        for (kind, ns, name), deployment in self.objects.items():
            if kind == "Deployment":
                pods = self._pods_of(ns, name)
                deployment["status"]["readyReplicas"] = sum(1 for p in pods if _ready(p))
                deployment["status"]["replicas"] = len(pods)

    def _pods_of(self, ns: str, name: str) -> list[JSON]:
        return [p for (pns, _), p in self.pods.items() if pns == ns and p["metadata"]["labels"].get(INSTANCE) == name]

    def _drop_orphans(self) -> None:
        for (ns, pod_name), pod in list(self.pods.items()):
            if ("Deployment", ns, pod["metadata"]["labels"].get(INSTANCE, "")) not in self.objects:
                del self.pods[(ns, pod_name)]

    def _replicaset(self, ns: str, name: str, deployment: JSON) -> None:
        template = deployment["spec"]["template"]
        template_hash = str(hash(json.dumps(template, sort_keys=True)))
        for pod in self._pods_of(ns, name):  # Recreate: a changed template replaces the pod
            if pod["metadata"]["annotations"]["template-hash"] != template_hash:
                del self.pods[(ns, pod["metadata"]["name"])]
        pods = self._pods_of(ns, name)
        want = int(deployment["spec"].get("replicas", 1))
        for pod in pods[want:]:
            del self.pods[(ns, pod["metadata"]["name"])]
        failure = self.replica_failures.get(name)
        deployment["status"]["conditions"] = [copy.deepcopy(failure)] if failure and want > len(pods) else []
        if failure is None:
            for _ in range(want - len(pods)):
                self._create_pod(ns, name, template, template_hash)

    def _create_pod(self, ns: str, name: str, template: JSON, template_hash: str) -> None:
        self._seq += 1
        pod_name = f"{name}-{self._seq:05d}"
        statuses = copy.deepcopy(self.pod_statuses.get(name) or [running_ready()])
        self.pods[(ns, pod_name)] = {
            "metadata": {"name": pod_name, "namespace": ns, "labels": dict(template["metadata"]["labels"]),
                         "annotations": {"template-hash": template_hash},
                         "creationTimestamp": f"2026-01-01T00:00:{self._seq:02d}Z"},
            "spec": copy.deepcopy(template["spec"]),
            "status": statuses[0],
        }
        self._queues[(ns, pod_name)] = statuses[1:]
