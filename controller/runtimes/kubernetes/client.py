"""A thin, synchronous wrapper over the official `kubernetes` client, speaking plain dicts.

`KubeApi` is the interface the runtime uses (and tests fake); `KubeClient` implements it with the
typed APIs. Objects are written with server-side apply (field manager "spaceport", force), which
creates or updates in one call and is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

JSON = dict[str, Any]
FIELD_MANAGER = "spaceport"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"

# kind -> (API class, method suffix, namespaced)
_KINDS: dict[str, tuple[type, str, bool]] = {
    "Namespace": (k8s.CoreV1Api, "namespace", False),
    "Service": (k8s.CoreV1Api, "namespaced_service", True),
    "ResourceQuota": (k8s.CoreV1Api, "namespaced_resource_quota", True),
    "Deployment": (k8s.AppsV1Api, "namespaced_deployment", True),
    "NetworkPolicy": (k8s.NetworkingV1Api, "namespaced_network_policy", True),
    "PersistentVolumeClaim": (k8s.CoreV1Api, "namespaced_persistent_volume_claim", True),
}


class KubeApi(Protocol):
    def apply(self, obj: JSON) -> JSON: ...

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool: ...

    def scale(self, name: str, namespace: str, replicas: int, annotations: dict[str, str]) -> JSON: ...

    def read_deployment(self, name: str, namespace: str) -> JSON | None: ...

    def list_deployments(self, label_selector: str) -> list[JSON]: ...

    def list_pods(self, label_selector: str, namespace: str | None = None) -> list[JSON]: ...

    def list_services(self, label_selector: str, namespace: str | None = None) -> list[JSON]: ...

    def list_claims(self, label_selector: str) -> list[JSON]: ...

    def pod_logs(self, name: str, namespace: str, follow: bool, tail_lines: int | None = None) -> Iterator[str]: ...

    def read_namespace(self, name: str) -> JSON | None: ...


class KubeClient:
    """`KubeApi` over a `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeClient:
        """In-cluster service account if running in a pod, else ~/.kube/config (or `kubeconfig`)."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return cls(k8s.ApiClient(configuration))

    def _method(self, kind: str, verb: str) -> tuple[Any, bool]:
        try:
            api_class, suffix, namespaced = _KINDS[kind]
        except KeyError:
            raise ValueError(f"spaceport does not manage {kind} objects; known: {', '.join(_KINDS)}") from None
        return getattr(api_class(self.api_client), f"{verb}_{suffix}"), namespaced

    def _plain(self, obj: Any) -> JSON:
        return dict(self.api_client.sanitize_for_serialization(obj) or {})

    def apply(self, obj: JSON) -> JSON:
        patch, namespaced = self._method(obj["kind"], "patch")
        meta = obj["metadata"]
        args = [meta["name"], meta["namespace"]] if namespaced else [meta["name"]]
        result = patch(
            *args, obj, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_CONTENT_TYPE
        )
        return self._plain(result)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete (foreground for Deployments' pods); False if it was already gone."""
        remove, namespaced = self._method(kind, "delete")
        args = [name, namespace] if namespaced else [name]
        try:  # raw response: the API answers with the object or a Status depending on kind and policy
            remove(*args, propagation_policy="Foreground", _preload_content=False).release_conn()
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def scale(self, name: str, namespace: str, replicas: int, annotations: dict[str, str]) -> JSON:
        body = {"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}}
        result = self.apps.patch_namespaced_deployment(
            name, namespace, body, field_manager=FIELD_MANAGER + "-scale", _content_type=MERGE_CONTENT_TYPE
        )
        return self._plain(result)

    def read_deployment(self, name: str, namespace: str) -> JSON | None:
        try:
            return self._plain(self.apps.read_namespaced_deployment(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_deployments(self, label_selector: str) -> list[JSON]:
        result = self.apps.list_deployment_for_all_namespaces(label_selector=label_selector)
        return [self._plain(item) for item in result.items]

    def list_pods(self, label_selector: str, namespace: str | None = None) -> list[JSON]:
        return self._list_core("pod", label_selector, namespace)

    def list_services(self, label_selector: str, namespace: str | None = None) -> list[JSON]:
        return self._list_core("service", label_selector, namespace)

    def _list_core(self, kind: str, label_selector: str, namespace: str | None) -> list[JSON]:
        """CoreV1 objects of `kind` (the client's snake_case name) in `namespace`, or in all of them."""
        if namespace is None:
            result = getattr(self.core, f"list_{kind}_for_all_namespaces")(label_selector=label_selector)
        else:
            result = getattr(self.core, f"list_namespaced_{kind}")(namespace, label_selector=label_selector)
        return [self._plain(item) for item in result.items]

    def list_claims(self, label_selector: str) -> list[JSON]:
        result = self.core.list_persistent_volume_claim_for_all_namespaces(label_selector=label_selector)
        return [self._plain(item) for item in result.items]

    def pod_logs(self, name: str, namespace: str, follow: bool, tail_lines: int | None = None) -> Iterator[str]:
        response: Any = self.core.read_namespaced_pod_log(
            name, namespace, follow=follow, tail_lines=tail_lines, _preload_content=False
        )
        try:
            yield from _lines(response.stream(decode_content=True))
        finally:
            response.release_conn()

    def read_namespace(self, name: str) -> JSON | None:
        try:
            return self._plain(self.core.read_namespace(name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")
