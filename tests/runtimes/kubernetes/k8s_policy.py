"""What the kubelet and a NetworkPolicy-enforcing CNI do with rendered manifests, for the k8s/ tests: a
container's environment ($(VAR) references and Secrets resolved), label selectors, and which pods a
NetworkPolicy peer admits. Pure functions over plain dicts, following the Kubernetes API reference:
`$(VAR)` expands to a variable defined earlier in the container (envFrom or env), `$$` escapes; a peer
with only a podSelector selects pods of the policy's own namespace; with a namespaceSelector, pods of the
namespaces it selects; both together, their intersection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

JSON = dict[str, Any]
NAME_LABEL = "kubernetes.io/metadata.name"  # set on every Namespace by the API server
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """The kubelet's expansion of one env value: $(NAME) of a defined variable, $$ -> $, others kept."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined[name] if name in defined else match.group(0)
    return _REFERENCE.sub(one, value)


def kubelet_env(container: JSON, configmaps: Mapping[str, Mapping[str, str]],
                secrets: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The environment the container's process gets: envFrom ConfigMaps, then env in order (later wins),
    values from Secrets looked up in `secrets` ((secret name, key) -> value: what the admin created)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        env[var["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: matchLabels and matchExpressions all hold; {} selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_admits(peer: Mapping[str, Any], policy_namespace: str, pod_labels: Mapping[str, str],
                namespace_labels: Mapping[str, str]) -> bool:
    """Does this from/to peer select the pod (labels) in the namespace (its labels, with NAME_LABEL)?"""
    if "ipBlock" in peer:
        return False  # address peers are checked by address, not by selectors
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], namespace_labels)
    else:
        in_namespace = namespace_labels.get(NAME_LABEL) == policy_namespace
    return in_namespace and selects(peer.get("podSelector"), pod_labels)


def ingress_admits(policy: JSON, pod_labels: Mapping[str, str], namespace_labels: Mapping[str, str]) -> bool:
    """Does any ingress rule of the policy admit traffic from that pod (on some port)?"""
    namespace = policy["metadata"]["namespace"]
    return any(peer_admits(peer, namespace, pod_labels, namespace_labels)
               for rule in policy["spec"].get("ingress") or [] for peer in rule.get("from") or [])


def egress_peers_admitting(policy: JSON, pod_labels: Mapping[str, str],
                           namespace_labels: Mapping[str, str]) -> list[JSON]:
    """The egress rules of the policy whose selector peers admit traffic to that pod."""
    namespace = policy["metadata"]["namespace"]
    return [rule for rule in policy["spec"].get("egress") or []
            if any(peer_admits(peer, namespace, pod_labels, namespace_labels) for peer in rule.get("to") or [])]


def governs(policy: JSON, kind: str, pod_labels: Mapping[str, str], pod_namespace: str) -> bool:
    """Does the policy apply to that pod for `kind` (Ingress or Egress) traffic?"""
    spec = policy["spec"]
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
    return (policy["metadata"]["namespace"] == pod_namespace and kind in types
            and selects(spec.get("podSelector"), pod_labels))
