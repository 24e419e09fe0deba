"""KubeClient against the real official client, with only the HTTP pool stubbed: checks the requests
it would send to an API server (method, path, query, content type, body)."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3
from kubernetes import client as k8s

from controller.runtimes.kubernetes.client import KubeClient


class StubPool:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.responses: list[tuple[int, Any]] = []

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **_: Any) -> urllib3.HTTPResponse:
        self.requests.append({"method": method, "url": url, "body": json.loads(body) if body else None,
                              "headers": dict(headers or {})})
        status, payload = self.responses.pop(0) if self.responses else (200, {})
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return urllib3.HTTPResponse(body=io.BytesIO(data), status=status, preload_content=False,
                                    headers={"Content-Type": "application/json"})


@pytest.fixture
def stub() -> tuple[KubeClient, StubPool]:
    api_client = k8s.ApiClient(k8s.Configuration(host="https://k8s.invalid"))
    pool = StubPool()
    api_client.rest_client.pool_manager = pool
    return KubeClient(api_client), pool


def deployment(name: str = "web", namespace: str = "ns", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "x"}]}}},
            **extra}


def split(url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query)


def test_apply_is_server_side_apply(stub: tuple[KubeClient, StubPool]) -> None:
    kube, pool = stub
    obj = deployment("web", "spaceport-alice")
    pool.responses.append((200, {**obj, "status": {"readyReplicas": 1}}))
    result = kube.apply(obj)
    sent = pool.requests[0]
    path, query = split(sent["url"])
    assert sent["method"] == "PATCH"
    assert path == "/apis/apps/v1/namespaces/spaceport-alice/deployments/web"
    assert query == {"fieldManager": ["spaceport"], "force": ["true"]}
    assert sent["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert sent["body"] == obj
    assert result["status"] == {"readyReplicas": 1}


@pytest.mark.parametrize(
    ("kind", "namespace", "path"),
    [
        ("Namespace", None, "/api/v1/namespaces/n"),
        ("Service", "ns", "/api/v1/namespaces/ns/services/n"),
        ("ResourceQuota", "ns", "/api/v1/namespaces/ns/resourcequotas/n"),
        ("NetworkPolicy", "ns", "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/n"),
    ],
)
def test_apply_paths_per_kind(stub: tuple[KubeClient, StubPool], kind: str, namespace: str | None,
                              path: str) -> None:
    kube, pool = stub
    meta = {"name": "n", **({"namespace": namespace} if namespace else {})}
    kube.apply({"apiVersion": "v1", "kind": kind, "metadata": meta})
    assert split(pool.requests[0]["url"])[0] == path


def test_unknown_kind_is_refused(stub: tuple[KubeClient, StubPool]) -> None:
    with pytest.raises(ValueError, match="does not manage Secret"):
        stub[0].apply({"kind": "Secret", "metadata": {"name": "s", "namespace": "n"}})


def test_delete_and_missing(stub: tuple[KubeClient, StubPool]) -> None:
    kube, pool = stub
    pool.responses += [(200, {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web"}}),
                       (404, {"kind": "Status", "apiVersion": "v1", "code": 404})]
    assert kube.delete("Service", "web", "ns") is True
    assert kube.delete("Deployment", "web", "ns") is False
    assert pool.requests[0]["method"] == "DELETE"
    assert split(pool.requests[1]["url"])[0] == "/apis/apps/v1/namespaces/ns/deployments/web"
    assert split(pool.requests[1]["url"])[1] == {"propagationPolicy": ["Foreground"]}


def test_scale_is_a_merge_patch(stub: tuple[KubeClient, StubPool]) -> None:
    kube, pool = stub
    pool.responses.append((200, deployment()))
    kube.scale("web", "ns", 0, {"spaceport.paused": "stop"})
    sent = pool.requests[0]
    assert sent["headers"]["Content-Type"] == "application/merge-patch+json"
    assert sent["body"] == {"metadata": {"annotations": {"spaceport.paused": "stop"}}, "spec": {"replicas": 0}}


def test_reads_and_lists(stub: tuple[KubeClient, StubPool]) -> None:
    kube, pool = stub
    pool.responses += [
        (404, {"kind": "Status", "code": 404}),
        (200, {"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {},
               "items": [deployment("a", "x")]}),
        (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
        (404, {"kind": "Status", "code": 404}),
        (200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x", "labels": {"spaceport.site": "s"}}}),
    ]
    assert kube.read_deployment("a", "x") is None
    assert kube.list_deployments("app.kubernetes.io/managed-by=spaceport")[0]["metadata"]["name"] == "a"
    assert kube.list_pods("spaceport.instance=a", "x") == []
    assert kube.read_namespace("gone") is None
    assert kube.read_namespace("x")["metadata"]["labels"] == {"spaceport.site": "s"}
    paths = [split(r["url"]) for r in pool.requests]
    assert paths[1] == ("/apis/apps/v1/deployments", {"labelSelector": ["app.kubernetes.io/managed-by=spaceport"]})
    assert paths[2] == ("/api/v1/namespaces/x/pods", {"labelSelector": ["spaceport.instance=a"]})
    assert [p for p, _ in paths[3:]] == ["/api/v1/namespaces/gone", "/api/v1/namespaces/x"]


def test_pod_logs_stream_lines(stub: tuple[KubeClient, StubPool]) -> None:
    kube, pool = stub
    pool.responses.append((200, b"one\ntwo\npartial"))
    assert list(kube.pod_logs("p", "ns", follow=True)) == ["one", "two", "partial"]
    path, query = split(pool.requests[0]["url"])
    assert path == "/api/v1/namespaces/ns/pods/p/log" and query == {"follow": ["true"]}


def test_service_lists_are_scoped_like_pod_lists(stub: tuple[KubeClient, StubPool]) -> None:
    kube, pool = stub
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "x"},
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.4.2"}}
    pool.responses += [(200, {"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": [service]}),
                       (200, {"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": []})]
    assert [s["spec"]["clusterIP"] for s in kube.list_services("spaceport.site=s")] == ["10.96.4.2"]
    assert kube.list_services("spaceport.instance=a", "x") == []
    paths = [split(r["url"]) for r in pool.requests]
    assert paths == [("/api/v1/services", {"labelSelector": ["spaceport.site=s"]}),
                     ("/api/v1/namespaces/x/services", {"labelSelector": ["spaceport.instance=a"]})]
