"""A fake cluster at the level of our `KubeApi` wrapper (no API server can run here).

It stores applied objects in dicts and plays the parts of the controllers the runtime relies on:
the ReplicaSet controller (creates a pod per replica, refused with the real "exceeded quota" message
when the namespace's ResourceQuota would be exceeded), the scheduler (binds a pod to a node whose
labels match its nodeSelector, whose taints it tolerates and that has enough of the extended resources
left, else leaves it Pending/Unschedulable with the real "Insufficient nvidia.com/gpu" message) and the
kubelet (a bound pod is Running and Ready at once).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

JSON = dict[str, Any]
INSTANCE = "spaceport.instance"
STANDARD = {"cpu", "memory", "ephemeral-storage"}


def node(name: str, labels: dict[str, str] | None = None, allocatable: dict[str, Any] | None = None,
         taints: list[JSON] | None = None, unschedulable: bool = False) -> JSON:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi", **(allocatable or {})}},
    }


def _matches(labels: dict[str, str] | None, selector: str) -> bool:
    wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
    return all((labels or {}).get(k) == v for k, v in wanted.items())


def _extended(pod: JSON) -> dict[str, int]:
    requests: dict[str, int] = {}
    for c in pod["spec"]["containers"]:
        for res, qty in (c.get("resources", {}).get("requests") or {}).items():
            if res not in STANDARD:
                requests[res] = requests.get(res, 0) + int(qty)
    return requests


class FakeKube:
    def __init__(self, nodes: list[JSON] | None = None) -> None:
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.pods: dict[tuple[str, str], JSON] = {}
        self.nodes = nodes if nodes is not None else [node("cpu-1")]
        self.logs: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self._seq = 0

    # ---- KubeApi ----

    def apply(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        self.calls.append(("apply", f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"))
        if obj["kind"] != "Namespace" and ("Namespace", "", meta.get("namespace", "")) not in self.objects:
            raise AssertionError(f"namespace {meta.get('namespace')} applied after {obj['kind']}")
        stored = copy.deepcopy(obj)
        stored["status"] = copy.deepcopy(self.objects.get(key, {}).get("status", {}))
        self.objects[key] = stored
        self._reconcile()
        return copy.deepcopy(stored)

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

    def list_deployments(self, label_selector: str) -> list[JSON]:
        return [copy.deepcopy(o) for (kind, _, _), o in sorted(self.objects.items())
                if kind == "Deployment" and _matches(o["metadata"].get("labels"), label_selector)]

    def list_pods(self, label_selector: str, namespace: str | None = None) -> list[JSON]:
        return [copy.deepcopy(p) for (ns, _), p in sorted(self.pods.items())
                if (namespace is None or ns == namespace) and _matches(p["metadata"]["labels"], label_selector)]

    def pod_logs(self, name: str, namespace: str, follow: bool, tail_lines: int | None = None) -> Iterator[str]:
        assert (namespace, name) in self.pods, f"no pod {namespace}/{name}"
        yield from list(self.logs.get(name, [f"{name} started"]))

    def list_nodes(self) -> list[JSON]:
        return copy.deepcopy(self.nodes)

    # ---- helpers for tests ----

    def get(self, kind: str, namespace: str, name: str) -> JSON:
        return self.objects[(kind, namespace, name)]

    def kinds(self) -> list[str]:
        return sorted(f"{k}/{ns}/{n}" for k, ns, n in self.objects)

    # ---- the simulated controllers ----

    def _reconcile(self) -> None:
        for (kind, ns, name), deployment in sorted(self.objects.items()):
            if kind == "Deployment":
                self._replicaset(ns, name, deployment)
        self._drop_orphans()
        self._schedule()
        for (kind, ns, name), deployment in self.objects.items():
            if kind == "Deployment":
                ready = [p for p in self._pods_of(ns, name) if p["status"].get("phase") == "Running"]
                deployment["status"]["readyReplicas"] = len(ready)
                deployment["status"]["replicas"] = len(self._pods_of(ns, name))

    def _pods_of(self, ns: str, name: str) -> list[JSON]:
        return [p for (pns, _), p in self.pods.items() if pns == ns and p["metadata"]["labels"].get(INSTANCE) == name]

    def _drop_orphans(self) -> None:
        for (ns, pod_name), pod in list(self.pods.items()):
            if ("Deployment", ns, pod["metadata"]["labels"].get(INSTANCE, "")) not in self.objects:
                del self.pods[(ns, pod_name)]

    def _replicaset(self, ns: str, name: str, deployment: JSON) -> None:
        template = deployment["spec"]["template"]
        template_hash = str(hash(json.dumps(template, sort_keys=True)))
        pods = self._pods_of(ns, name)
        for pod in pods:  # Recreate: a changed template replaces the pod
            if pod["metadata"]["annotations"]["template-hash"] != template_hash:
                del self.pods[(ns, pod["metadata"]["name"])]
        pods = self._pods_of(ns, name)
        want = int(deployment["spec"].get("replicas", 1))
        for pod in pods[want:]:
            del self.pods[(ns, pod["metadata"]["name"])]
        conditions: list[JSON] = []
        for _ in range(want - len(pods)):
            refusal = self._quota_refusal(ns, name, template)
            if refusal:
                conditions = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                               "message": refusal}]
                break
            self._create_pod(ns, name, template, template_hash)
        deployment["status"]["conditions"] = conditions

    def _quota_refusal(self, ns: str, name: str, template: JSON) -> str:
        quota = next((o for (k, qns, _), o in self.objects.items() if k == "ResourceQuota" and qns == ns), None)
        if quota is None:
            return ""
        wanted = _extended({"spec": template["spec"]})
        for res, qty in wanted.items():
            limit = quota["spec"]["hard"].get(f"requests.{res}")
            if limit is None:
                continue
            used = sum(_extended(p).get(res, 0) for (pns, _), p in self.pods.items() if pns == ns)
            if used + qty > int(limit):
                q = quota["metadata"]["name"]
                return (f'pods "{name}-{self._seq:05d}" is forbidden: exceeded quota: {q}, '
                        f"requested: requests.{res}={qty}, used: requests.{res}={used}, "
                        f"limited: requests.{res}={limit}")
        return ""

    def _create_pod(self, ns: str, name: str, template: JSON, template_hash: str) -> None:
        self._seq += 1
        pod_name = f"{name}-{self._seq:05d}"
        self.pods[(ns, pod_name)] = {
            "metadata": {"name": pod_name, "namespace": ns, "labels": dict(template["metadata"]["labels"]),
                         "annotations": {"template-hash": template_hash},
                         "creationTimestamp": f"2026-01-01T00:00:{self._seq:02d}Z"},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending"},
        }

    def _schedule(self) -> None:
        for pod in sorted(self.pods.values(), key=lambda p: p["metadata"]["name"]):
            if pod["spec"].get("nodeName"):
                continue
            reasons = [self._unfit(pod, n) for n in self.nodes]
            fit = next((n for n, why in zip(self.nodes, reasons, strict=True) if not why), None)
            if fit is None:
                pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": self._unschedulable_message(reasons)}]
                continue
            pod["spec"]["nodeName"] = fit["metadata"]["name"]
            pod["status"] = {
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": True, "state": {"running": {}}}],
            }

    def _unfit(self, pod: JSON, n: JSON) -> str:
        if n["spec"].get("unschedulable"):
            return "node(s) were unschedulable"
        labels = n["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()):
            return "node(s) didn't match Pod's node affinity/selector"
        tolerated = {t["key"] for t in pod["spec"].get("tolerations") or []}
        untolerated = [t for t in n["spec"]["taints"] if t["key"] not in tolerated]
        if untolerated:
            t = untolerated[0]
            return f"node(s) had untolerated taint {{{t['key']}: {t.get('value', '')}}}"
        for res, qty in _extended(pod).items():
            bound = [p for p in self.pods.values() if p["spec"].get("nodeName") == n["metadata"]["name"]]
            used = sum(_extended(p).get(res, 0) for p in bound)
            if used + qty > int(n["status"]["allocatable"].get(res, 0)):
                return f"Insufficient {res}"
        return ""

    def _unschedulable_message(self, reasons: list[str]) -> str:
        counts: dict[str, int] = {}
        for why in reasons:
            counts[why] = counts.get(why, 0) + 1
        detail = ", ".join(f"{c} {why}" for why, c in sorted(counts.items()))
        return f"0/{len(self.nodes)} nodes are available: {detail}."
