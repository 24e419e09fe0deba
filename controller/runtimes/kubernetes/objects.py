"""Pure builders of the Kubernetes objects that run a space (kubespawner `objects.py` style).

Every function takes typed inputs and returns a plain dict ready for server-side apply. Layout:
one namespace per owner (`<prefix><owner>`, prefix SPACEPORT_KUBERNETES_NAMESPACE_PREFIX) holding a
ResourceQuota mirroring the owner's accelerator quota and a NetworkPolicy that isolates its pods; per
instance a Deployment (replicas 1, or 0 asleep) and a ClusterIP Service named after the instance.
Every object carries the site label (`spaceport.site`, from the prefix), and every list the runtime
makes selects on it, so two installations on one cluster never see or sweep each other's objects.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from builder.artifact import ImageArtifact
from controller.domain.hardware import AcceleratorType, Catalog
from controller.domain.naming import registry_host
from controller.runtimes.appenv import app_env
from controller.runtimes.base import InstanceSpec, Mount, RuntimeFailure

MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "spaceport.instance"
SPACE_LABEL = "spaceport.space"
OWNER_LABEL = "spaceport.owner"
SITE_LABEL = "spaceport.site"
ACCELERATOR_LABEL = "spaceport.accelerator"
STORAGE_LABEL = "spaceport.storage"  # "persistent" on a space's /data claim (what storage collection lists)
PERSISTENT = "persistent"
SPACE_ID_ANNOTATION = "spaceport.space-id"
NAME_ANNOTATION = "spaceport.instance-name"  # InstanceSpec.name as given (the k8s name is sanitized)
LABELS_ANNOTATION = "spaceport.labels"
PAUSED_ANNOTATION = "spaceport.paused"  # "" running, "stop" or "freeze" when scaled to zero
STOP_REASON_ANNOTATION = "spaceport.stop-reason"  # why the runtime itself stopped it ("" otherwise)
QUOTA_NAME = "spaceport-accelerators"
POLICY_NAME = "spaceport-isolation"
APP_CONTAINER = "app"
APP_UID = 1000
PRIVATE_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
PRIVATE_V6 = ("fc00::/7", "fe80::/10")
CACHE_VOLUME = "cache"
CACHE_PATH = "/home/user/.cache"  # HF_HOME's default parent: model downloads, the big writes
DATA_VOLUME = "data"  # the space's persistent storage (request_space_storage), a PersistentVolumeClaim
# Namespaces an owner's name must never map to (the prefix alone cannot rule them all out).
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

JSON = dict[str, Any]


@dataclass(frozen=True)
class SiteConfig:
    """How this cluster runs spaces; the defaults match k8s/base."""

    catalog: Catalog
    namespace_prefix: str = "spaceport-"
    controller_namespace: str = "spaceport"
    controller_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "spaceport", "app.kubernetes.io/component": "controller"}
    )
    cluster_domain: str = "cluster.local"
    dns_namespace: str = "kube-system"
    dns_pod_labels: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    blocked_egress_v4: tuple[str, ...] = PRIVATE_V4
    blocked_egress_v6: tuple[str, ...] = PRIVATE_V6
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    runtime_class_name: str | None = None
    storage_class: str | None = None  # set: the app's ~/.cache is a generic ephemeral volume of this class
    wake_timeout: float = 300.0  # how long thaw waits for the new pod to pass its health check
    poll_interval: float = 0.5  # between checks while waiting (tests: 0)

    @property
    def site(self) -> str:
        """This installation's label value: its namespace prefix, which two installations cannot share."""
        return label_value(self.namespace_prefix) or "spaceport"


# ---- names ---------------------------------------------------------------------------------------


def dns_label(value: str, max_len: int = 63) -> str:
    """A DNS-1035 label (lowercase alnum and '-', starts with a letter); a hash keeps it unique
    whenever the value had to be changed, so distinct inputs never share a name."""
    clean = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    clean = re.sub(r"-{2,}", "-", clean)
    if clean and not clean[0].isalpha():
        clean = "s-" + clean
    if clean == value and len(clean) <= max_len:
        return clean
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{clean[: max_len - 9].rstrip('-') or 's'}-{digest}"


def namespace_name(owner: str, site: SiteConfig) -> str:
    """The owner's namespace; never the controller's own or a system namespace (an owner named
    `system` under prefix `spaceport-` would otherwise get `spaceport-system`, and its NetworkPolicy
    and ResourceQuota would land on whatever runs there)."""
    name = site.namespace_prefix + dns_label(owner, 63 - len(site.namespace_prefix))
    if name == site.controller_namespace or name in RESERVED_NAMESPACES:
        raise RuntimeFailure(
            f"the owner {owner!r} maps to the namespace {name!r}, which is not an owner namespace; rename "
            "the account, or set SPACEPORT_KUBERNETES_NAMESPACE_PREFIX so owner namespaces cannot collide"
        )
    return name


def instance_name(spec_name: str) -> str:
    return dns_label(spec_name)


def owner_of(space_id: str) -> str:
    return space_id.split("/", 1)[0]


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of alnum, '-', '_', '.', alnum at both ends)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", ".", value).strip("._-")
    return clean[:63].rstrip("._-")


def service_host(spec_name: str, owner: str, site: SiteConfig) -> str:
    return f"{instance_name(spec_name)}.{namespace_name(owner, site)}.svc.{site.cluster_domain}"


def instance_selector(spec_name: str) -> JSON:
    return {INSTANCE_LABEL: instance_name(spec_name)}


def common_labels(site: SiteConfig) -> dict[str, str]:
    return {MANAGED_BY: "spaceport", "app.kubernetes.io/part-of": "spaceport", SITE_LABEL: site.site}


def site_selector(site: SiteConfig, **labels: str) -> str:
    """A label selector for this installation's objects (plus `labels`): every list uses one."""
    wanted = {MANAGED_BY: "spaceport", SITE_LABEL: site.site, **labels}
    return ",".join(f"{k}={v}" for k, v in wanted.items())


def instance_labels(spec: InstanceSpec, site: SiteConfig) -> dict[str, str]:
    labels = {
        **common_labels(site),
        "app.kubernetes.io/name": "space",
        "app.kubernetes.io/instance": instance_name(spec.name),
        INSTANCE_LABEL: instance_name(spec.name),
        SPACE_LABEL: label_value(spec.space_id.replace("/", ".")),
        OWNER_LABEL: label_value(owner_of(spec.space_id)),
    }
    accel = spec.hardware.accelerators
    if accel is not None and accel.device_ids:
        labels[ACCELERATOR_LABEL] = label_value(accel.type)
    return labels


# ---- per owner -----------------------------------------------------------------------------------


def namespace(owner: str, site: SiteConfig) -> JSON:
    """The owner's namespace; Pod Security `restricted` is enforced (our pods comply)."""
    labels = {
        **common_labels(site),
        OWNER_LABEL: label_value(owner),
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace_name(owner, site), "labels": labels}}


def resource_quota(owner: str, quotas: Mapping[str, int], site: SiteConfig) -> JSON:
    """A backstop for the owner's accelerator quota, per extended resource.

    Spaceport's allocator enforces quotas per accelerator *type*; Kubernetes only knows resources, and
    T4 and A10G are both `nvidia.com/gpu`, so the limits of types sharing a resource are added up.
    Types with no quota get 0, so a pod can never take a device the allocator did not grant.
    """
    hard: dict[str, str] = {}
    for accel in site.catalog.accelerators.values():
        key = f"requests.{accel.k8s_resource}"
        hard[key] = str(int(hard.get(key, "0")) + max(0, quotas.get(accel.name, 0)))
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": namespace_name(owner, site), "labels": common_labels(site)},
        "spec": {"hard": dict(sorted(hard.items()))},
    }


def network_policy(owner: str, site: SiteConfig) -> JSON:
    """Spaces take traffic only from the Spaceport controller (its proxy) and reach only DNS and the
    internet: not each other, not the cluster's private ranges, not the cloud metadata endpoint."""
    from_controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": site.controller_namespace}},
        "podSelector": {"matchLabels": dict(site.controller_pod_labels)},
    }
    dns = {
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": site.dns_namespace}},
            "podSelector": {"matchLabels": dict(site.dns_pod_labels)},
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    internet = {"to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(site.blocked_egress_v4)}},
        {"ipBlock": {"cidr": "::/0", "except": list(site.blocked_egress_v6)}},
    ]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": namespace_name(owner, site), "labels": common_labels(site)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [from_controller]}],
            "egress": [dns, internet],
        },
    }


# ---- per instance --------------------------------------------------------------------------------


def image_artifact(spec: InstanceSpec) -> ImageArtifact:
    if not isinstance(spec.artifact, ImageArtifact):
        raise RuntimeFailure(
            f"the kubernetes runtime runs container images, but {spec.space_id} was built as a venv (under "
            "SPACEPORT_RUNTIME=local); push again or factory-rebuild it to build an image"
        )
    return spec.artifact


def cpu_quantity(cpu: float) -> str:
    return str(int(cpu)) if float(cpu).is_integer() else f"{round(cpu * 1000)}m"


def resources(spec: InstanceSpec, site: SiteConfig) -> JSON:
    """requests == limits (Guaranteed QoS); the extended resource when accelerated."""
    hw = spec.hardware
    amounts: dict[str, str | int] = {
        "cpu": cpu_quantity(hw.cpu),
        "memory": f"{hw.memory_mb}Mi",
        "ephemeral-storage": f"{hw.disk_mb}Mi",
    }
    accel = accelerator_type(spec, site)
    if accel is not None and hw.accelerators is not None:
        amounts[accel.k8s_resource] = len(hw.accelerators.device_ids)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def accelerator_type(spec: InstanceSpec, site: SiteConfig) -> AcceleratorType | None:
    accel = spec.hardware.accelerators
    if accel is None or not accel.device_ids:
        return None
    try:
        return site.catalog.accelerator(accel.type)
    except LookupError as exc:
        raise RuntimeFailure(str(exc)) from exc


def env_list(spec: InstanceSpec, artifact: ImageArtifact) -> list[JSON]:
    """The environment every runtime gives an app (appenv.app_env: the space's names, the artifact's and
    the instance's values without platform-owned names, SYSTEM=spaces, the port); HOME and the working
    directory come from the image, as on docker. Order kept, names unique."""
    env, _ = app_env(spec, port=artifact.port, bind="0.0.0.0")
    return [{"name": name, "value": value} for name, value in env.items()]


def pull_policy(image: str, policy: str) -> str:
    """The site's policy (IfNotPresent: a REGISTRY/SLUG:SHA12 tag names one commit's build, so a node's copy
    is the right one) for an image in a registry; Never for a registry-less `spaceport/SLUG:SHA12`, which
    exists only on the engine that built it: the kubelet must not look it up on Docker Hub instead."""
    host = registry_host(image)
    in_a_registry = "/" in image and (host == "localhost" or "." in host or ":" in host)
    return policy if in_a_registry else "Never"


def container(spec: InstanceSpec, site: SiteConfig) -> JSON:
    artifact = image_artifact(spec)
    body: JSON = {
        "name": APP_CONTAINER,
        "image": artifact.image,
        "imagePullPolicy": pull_policy(artifact.image, site.image_pull_policy),
        "ports": [{"name": "http", "containerPort": artifact.port, "protocol": "TCP"}],
        "env": env_list(spec, artifact),
        "resources": resources(spec, site),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "runAsGroup": APP_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "readinessProbe": {
            "httpGet": {"path": artifact.health_path or "/", "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
    }
    mounts = [{"name": CACHE_VOLUME, "mountPath": CACHE_PATH}] if site.storage_class else []
    data = storage_mount(spec)
    if data is not None:
        mounts.append({"name": DATA_VOLUME, "mountPath": data.target})
    if mounts:
        body["volumeMounts"] = mounts
    return body


def storage_mount(spec: InstanceSpec) -> Mount | None:
    """The space's persistent storage; read-only repo volumes are not mounted on Kubernetes (refused
    when they are set, so a spec holding one is a runtime failure)."""
    if any(m.read_only for m in spec.mounts):
        raise RuntimeFailure("volumes of type 'space' are not mounted on the Kubernetes runtime")
    return next((m for m in spec.mounts if m.claim), None)


def persistent_volume_claim(spec: InstanceSpec, site: SiteConfig) -> JSON | None:
    """The space's /data: one claim per space (its name from the storage key, so every instance, restart and
    rebuild of the space binds the same one), of the site's storage class (or the cluster's default), sized by
    its tier. It is not owned by any Deployment: removing an instance never deletes it; deleting the space's
    storage does (KubernetesRuntime.prune_claims_sync, which lists claims by STORAGE_LABEL)."""
    data = storage_mount(spec)
    if data is None:
        return None
    body: JSON = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": str(data.size_bytes)}}}
    if site.storage_class:
        body["storageClassName"] = site.storage_class
    labels = {**common_labels(site), SPACE_LABEL: label_value(spec.space_id.replace("/", ".")),
              OWNER_LABEL: label_value(owner_of(spec.space_id)), STORAGE_LABEL: PERSISTENT}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": dns_label(data.claim), "namespace": namespace_name(owner_of(spec.space_id), site),
                     "labels": labels, "annotations": {SPACE_ID_ANNOTATION: spec.space_id}},
        "spec": body,
    }


def same_node_as_space(spec: InstanceSpec) -> JSON:
    """A ReadWriteOnce claim is usable on one node: a new instance (restart, push) starts beside the old one,
    which keeps serving until the new is healthy, so both must run on the same node."""
    term = {"labelSelector": {"matchLabels": {SPACE_LABEL: label_value(spec.space_id.replace("/", "."))}},
            "topologyKey": "kubernetes.io/hostname"}
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def cache_volume(spec: InstanceSpec, site: SiteConfig) -> JSON:
    """A generic ephemeral volume of the site's storage class for the app's ~/.cache (model downloads):
    created with the pod, deleted with it, sized like the instance's disk."""
    return {
        "name": CACHE_VOLUME,
        "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": common_labels(site)},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": site.storage_class,
                "resources": {"requests": {"storage": f"{spec.hardware.disk_mb}Mi"}},
            },
        }},
    }


def pod_spec(spec: InstanceSpec, site: SiteConfig) -> JSON:
    body: JSON = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "runAsGroup": APP_UID,
            "fsGroup": APP_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container(spec, site)],
        "terminationGracePeriodSeconds": 10,
    }
    accel = accelerator_type(spec, site)
    if accel is not None:
        body["nodeSelector"] = dict(accel.node_selector)
        body["tolerations"] = [dict(t) for t in accel.tolerations]
    if site.image_pull_secrets:
        body["imagePullSecrets"] = [{"name": name} for name in site.image_pull_secrets]
    if site.runtime_class_name:
        body["runtimeClassName"] = site.runtime_class_name
    volumes = [cache_volume(spec, site)] if site.storage_class else []
    data = storage_mount(spec)
    if data is not None:
        volumes.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": dns_label(data.claim)}})
        body["affinity"] = same_node_as_space(spec)
    if volumes:
        body["volumes"] = volumes
    return body


def instance_annotations(spec: InstanceSpec) -> dict[str, str]:
    accel = spec.hardware.accelerators
    return {
        NAME_ANNOTATION: spec.name,
        SPACE_ID_ANNOTATION: spec.space_id,
        LABELS_ANNOTATION: json.dumps(spec.labels, sort_keys=True),
        "spaceport.flavor": spec.hardware.flavor,
        "spaceport.devices": ",".join(accel.device_ids) if accel else "",
    }


def deployment(spec: InstanceSpec, site: SiteConfig, replicas: int = 1) -> JSON:
    """The instance's Deployment; `replicas=0` is a sleeping space (resources and quota freed).

    Strategy Recreate: a rolling update would need a second set of accelerators while both run.
    """
    labels = instance_labels(spec, site)
    annotations = {**instance_annotations(spec), PAUSED_ANNOTATION: ""}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": instance_name(spec.name),
            "namespace": namespace_name(owner_of(spec.space_id), site),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": instance_selector(spec.name)},
            "template": {
                "metadata": {"labels": labels, "annotations": instance_annotations(spec)},
                "spec": pod_spec(spec, site),
            },
        },
    }


def service(spec: InstanceSpec, site: SiteConfig) -> JSON:
    artifact = image_artifact(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": instance_name(spec.name),
            "namespace": namespace_name(owner_of(spec.space_id), site),
            "labels": instance_labels(spec, site),
            "annotations": {SPACE_ID_ANNOTATION: spec.space_id},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": instance_selector(spec.name),
            "ports": [{"name": "http", "port": artifact.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def owner_objects(owner: str, quotas: Mapping[str, int] | None, site: SiteConfig) -> list[JSON]:
    """Namespace, then its ResourceQuota (when quotas are known) and NetworkPolicy."""
    objects = [namespace(owner, site)]
    if quotas is not None:
        objects.append(resource_quota(owner, quotas, site))
    objects.append(network_policy(owner, site))
    return objects


def instance_objects(spec: InstanceSpec, site: SiteConfig, replicas: int = 1) -> list[JSON]:
    """The space's claim (when it has persistent storage), then the Deployment and Service."""
    claim = persistent_volume_claim(spec, site)
    return [*([claim] if claim is not None else []), deployment(spec, site, replicas), service(spec, site)]
