from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from builder.artifact import ImageArtifact, VenvArtifact
from controller.runtimes.base import Accelerators, HardwareSpec, InstanceSpec, RuntimeFailure
from controller.runtimes.kubernetes import objects
from controller.runtimes.kubernetes.objects import SiteConfig

K8S_VERSION = "1.37.0"  # newest schema kubernetes-validate 1.37 ships (also checked against 1.30 below)
ART = ImageArtifact(image="registry.local:5000/spaces/alice-demo:0123456789ab", port=7860, env=(("GRADIO_SERVER_PORT", "7860"),),
                    health_path="/healthz")


def make_spec(flavor: str = "cpu-basic", accel: Accelerators | None = None, cpu: float = 2.0,
              memory_mb: int = 16384, space: str = "alice/demo") -> InstanceSpec:
    return InstanceSpec(
        name="alice-demo-b1",
        space_id=space,
        artifact=ART,
        env={"SPACE_ID": space, "GRADIO_SERVER_PORT": "7861"},
        hardware=HardwareSpec(flavor=flavor, cpu=cpu, memory_mb=memory_mb, accelerators=accel),
        labels={"spaceport/build": "b1"},
    )


LABELS = {
    "app.kubernetes.io/managed-by": "spaceport",
    "app.kubernetes.io/part-of": "spaceport",
    "spaceport.site": "spaceport",
    "app.kubernetes.io/name": "space",
    "app.kubernetes.io/instance": "alice-demo-b1",
    "spaceport.instance": "alice-demo-b1",
    "spaceport.space": "alice.demo",
    "spaceport.owner": "alice",
}


def pod_annotations(flavor: str, devices: str) -> dict[str, str]:
    return {
        "spaceport.instance-name": "alice-demo-b1",
        "spaceport.space-id": "alice/demo",
        "spaceport.labels": json.dumps({"spaceport/build": "b1"}),
        "spaceport.flavor": flavor,
        "spaceport.devices": devices,
    }


SECURE = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_cpu_deployment(site: SiteConfig) -> None:
    assert objects.deployment(make_spec(), site) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "alice-demo-b1",
            "namespace": "spaceport-alice",
            "labels": LABELS,
            "annotations": {**pod_annotations("cpu-basic", ""), "spaceport.paused": ""},
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"spaceport.instance": "alice-demo-b1"}},
            "template": {
                "metadata": {"labels": LABELS, "annotations": pod_annotations("cpu-basic", "")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "app",
                        "image": "registry.local:5000/spaces/alice-demo:0123456789ab",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "http", "containerPort": 7860, "protocol": "TCP"}],
                        "env": [  # appenv.app_env: a space's GRADIO_SERVER_PORT never moves the port
                            {"name": "SPACE_ID", "value": "alice/demo"},
                            {"name": "SPACE_AUTHOR_NAME", "value": "alice"},
                            {"name": "SPACE_REPO_NAME", "value": "demo"},
                            {"name": "SPACE_TITLE", "value": "demo"},
                            {"name": "GRADIO_ALLOW_FLAGGING", "value": "never"},
                            {"name": "GRADIO_NUM_PORTS", "value": "1"},
                            {"name": "SYSTEM", "value": "spaces"},
                            {"name": "PORT", "value": "7860"},
                            {"name": "GRADIO_SERVER_PORT", "value": "7860"},
                            {"name": "STREAMLIT_SERVER_PORT", "value": "7860"},
                            {"name": "GRADIO_SERVER_NAME", "value": "0.0.0.0"},
                            {"name": "STREAMLIT_SERVER_ADDRESS", "value": "0.0.0.0"},
                        ],
                        "resources": {
                            "requests": {"cpu": "2", "memory": "16384Mi", "ephemeral-storage": "2048Mi"},
                            "limits": {"cpu": "2", "memory": "16384Mi", "ephemeral-storage": "2048Mi"},
                        },
                        "securityContext": SECURE,
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": "http"},
                            "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 3,
                        },
                    }],
                },
            },
        },
    }


def test_pod_runs_the_app_in_the_same_environment_as_docker(site: SiteConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run environment is one function (appenv.app_env) on every runtime: the pod carries exactly the
    env the docker runtime gives the same spec (SYSTEM, SPACE_*, port; no proxy variable even when the
    controller has some), runs as uid 1000 and leaves HOME and the working directory to the image (the
    generated images set HOME=/home/user and WORKDIR /home/user/app, owned by uid 1000 and writable)."""
    from controller.runtimes.docker import build_create_kwargs

    monkeypatch.setenv("HTTPS_PROXY", "http://host-proxy.invalid:3128")
    spec = InstanceSpec(name="alice-demo-b1", space_id="alice/demo", artifact=ART, hardware=HardwareSpec(),
                        env={"SPACE_HOST": "alice-demo.apps.example", "SPACE_TITLE": "Demo", "SYSTEM": "x",
                             "MY_VAR": "1", "HOME": "/root", "PORT": "1"})  # fmt: skip
    pod = objects.deployment(spec, site)["spec"]["template"]["spec"]
    app = pod["containers"][0]
    env = {e["name"]: e["value"] for e in app["env"]}
    assert env == build_create_kwargs(spec)["environment"]
    assert {k: env[k] for k in ("SYSTEM", "SPACE_ID", "SPACE_AUTHOR_NAME", "SPACE_REPO_NAME", "SPACE_TITLE",
                                "SPACE_HOST", "MY_VAR", "PORT")} == {
        "SYSTEM": "spaces", "SPACE_ID": "alice/demo", "SPACE_AUTHOR_NAME": "alice", "SPACE_REPO_NAME": "demo",
        "SPACE_TITLE": "Demo", "SPACE_HOST": "alice-demo.apps.example", "MY_VAR": "1", "PORT": "7860"}  # fmt: skip
    assert "HOME" not in env and not [k for k in env if k.lower().endswith("_proxy")]
    assert "workingDir" not in app and "command" not in app and "args" not in app  # the image's WORKDIR and CMD
    assert app["securityContext"]["runAsUser"] == 1000 and not app["securityContext"].get("readOnlyRootFilesystem")
    assert pod["enableServiceLinks"] is False  # no *_SERVICE_HOST/_PORT variables of other services


def test_sleeping_deployment_has_zero_replicas(site: SiteConfig) -> None:
    assert objects.deployment(make_spec(), site, replicas=0)["spec"]["replicas"] == 0


def test_t4_pod_spec(site: SiteConfig) -> None:
    spec = make_spec("t4-small", Accelerators("nvidia-t4", ("0",)), cpu=4, memory_mb=15360)
    pod = objects.deployment(spec, site)["spec"]["template"]["spec"]
    amounts = {"cpu": "4", "memory": "15360Mi", "ephemeral-storage": "2048Mi", "nvidia.com/gpu": 1}
    assert pod["containers"][0]["resources"] == {"requests": amounts, "limits": amounts}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    env_names = [e["name"] for e in pod["containers"][0]["env"]]
    assert "CUDA_VISIBLE_DEVICES" not in env_names  # the device plugin exposes the devices itself
    assert objects.instance_labels(spec, site)["spaceport.accelerator"] == "nvidia-t4"


def test_a10g_x2_pod_spec(site: SiteConfig) -> None:
    spec = make_spec("a10g-largex2", Accelerators("nvidia-a10g", ("0", "1")), cpu=24, memory_mb=94208)
    pod = objects.deployment(spec, site)["spec"]["template"]["spec"]
    amounts = {"cpu": "24", "memory": "94208Mi", "ephemeral-storage": "2048Mi", "nvidia.com/gpu": 2}
    assert pod["containers"][0]["resources"] == {"requests": amounts, "limits": amounts}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert objects.deployment(spec, site)["metadata"]["annotations"]["spaceport.devices"] == "0,1"


def test_ascend_x1_pod_spec(site: SiteConfig) -> None:
    spec = make_spec("ascend-910b-x1", Accelerators("ascend-910b", ("3",)), cpu=0.5, memory_mb=196608)
    pod = objects.deployment(spec, site)["spec"]["template"]["spec"]
    amounts = {"cpu": "500m", "memory": "196608Mi", "ephemeral-storage": "2048Mi", "huawei.com/Ascend910": 1}
    assert pod["containers"][0]["resources"] == {"requests": amounts, "limits": amounts}
    assert pod["nodeSelector"] == {"accelerator": "huawei-Ascend910"}
    assert pod["tolerations"] == [{"key": "huawei.com/Ascend910", "operator": "Exists", "effect": "NoSchedule"}]


def test_service(site: SiteConfig) -> None:
    assert objects.service(make_spec(), site) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "alice-demo-b1", "namespace": "spaceport-alice", "labels": LABELS,
                     "annotations": {"spaceport.space-id": "alice/demo"}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"spaceport.instance": "alice-demo-b1"},
            "ports": [{"name": "http", "port": 7860, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    assert objects.service_host("alice-demo-b1", "alice", site) == "alice-demo-b1.spaceport-alice.svc.cluster.local"


def test_resource_quota_sums_types_sharing_a_resource(site: SiteConfig) -> None:
    quota = objects.resource_quota("acme", {"nvidia-t4": 1, "nvidia-a10g": 2}, site)
    assert quota == {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "spaceport-accelerators", "namespace": "spaceport-acme",
                     "labels": {"app.kubernetes.io/managed-by": "spaceport", "app.kubernetes.io/part-of": "spaceport",
                                "spaceport.site": "spaceport"}},
        "spec": {"hard": {"requests.huawei.com/Ascend910": "0", "requests.nvidia.com/gpu": "3"}},
    }


def test_network_policy_isolates_spaces(site: SiteConfig) -> None:
    spec = objects.network_policy("alice", site)["spec"]
    assert spec["podSelector"] == {} and spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "spaceport"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "spaceport",
                                        "app.kubernetes.io/component": "controller"}},
    }]}]
    dns, internet = spec["egress"]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    v4 = internet["to"][0]["ipBlock"]
    assert v4["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in v4["except"] and "169.254.0.0/16" in v4["except"]


def test_namespace_enforces_restricted_pod_security(site: SiteConfig) -> None:
    ns = objects.namespace("Alice_Smith", site)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    name = ns["metadata"]["name"]
    assert name.startswith("spaceport-alice-smith-") and len(name) <= 63


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("alice", "alice"), ("alice-demo-1", "alice-demo-1")],
)
def test_valid_names_are_kept(raw: str, expected: str) -> None:
    assert objects.dns_label(raw) == expected


@pytest.mark.parametrize("raw", ["Alice", "a_b", "9lives", "x" * 80, "a..b", "--", "Ünïcode"])
def test_names_are_sanitized_and_distinct(raw: str) -> None:
    label = objects.dns_label(raw)
    assert len(label) <= 63 and re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", label), label
    assert objects.dns_label(raw) != objects.dns_label(raw + "_")


def test_venv_artifact_is_refused(site: SiteConfig) -> None:
    venv = VenvArtifact(venv=Path("/v"), source=Path("/s"), command=("python", "app.py"), port=7860)
    spec = InstanceSpec(name="x", space_id="a/b", artifact=venv)
    with pytest.raises(RuntimeFailure, match="container images"):
        objects.instance_objects(spec, site)


@pytest.mark.parametrize(("image", "policy"), [
    ("registry.local:5000/spaces/alice-demo:0123456789ab", "IfNotPresent"),  # SPACEPORT_REGISTRY: one build per tag
    ("registry.example.org/alice-demo:0123456789ab", "IfNotPresent"),
    ("localhost/spaces/alice-demo:0123456789ab", "IfNotPresent"),
    ("spaceport/alice-demo:0123456789ab", "Never"),  # no registry: never looked up on Docker Hub
])
def test_pull_policy_pulls_registry_images_once_and_never_looks_local_tags_up(
        site: SiteConfig, image: str, policy: str) -> None:
    spec = replace(make_spec(), artifact=replace(ART, image=image))
    pod = objects.deployment(spec, site)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == image
    assert pod["containers"][0]["imagePullPolicy"] == policy


def test_unknown_accelerator_is_a_runtime_failure(site: SiteConfig) -> None:
    with pytest.raises(RuntimeFailure, match="unknown accelerator type 'tpu-v5'"):
        objects.deployment(make_spec("x", Accelerators("tpu-v5", ("0",))), site)


def test_site_options_reach_the_pod_spec(site: SiteConfig) -> None:
    custom = replace(site, namespace_prefix="sp2-", image_pull_secrets=("regcred",), runtime_class_name="gvisor",
                     storage_class="fast-nvme")
    deployment = objects.deployment(make_spec(), custom)
    assert deployment["metadata"]["namespace"] == "sp2-alice"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["runtimeClassName"] == "gvisor"
    assert pod["volumes"] == [{"name": "cache", "ephemeral": {"volumeClaimTemplate": {
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "spaceport", "app.kubernetes.io/part-of": "spaceport",
                                "spaceport.site": "sp2"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-nvme",
                 "resources": {"requests": {"storage": "2048Mi"}}}}}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "cache", "mountPath": "/home/user/.cache"}]
    for obj in objects.owner_objects("alice", {}, custom) + objects.instance_objects(make_spec(), custom):
        assert obj["metadata"]["labels"]["spaceport.site"] == "sp2", obj["kind"]
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    plain = objects.deployment(make_spec(), site)["spec"]["template"]["spec"]
    assert not {"imagePullSecrets", "runtimeClassName", "volumes"} & set(plain)
    assert "volumeMounts" not in plain["containers"][0]


@pytest.mark.parametrize(("prefix", "owner", "namespace"), [
    ("spaceport-", "system", "spaceport-system"),  # controller_namespace set to spaceport-system below
    ("kube-", "system", "kube-system"),
    ("kube-", "public", "kube-public"),
    ("de", "fault", "default"),
])
def test_an_owner_never_maps_to_the_controller_or_a_system_namespace(
        site: SiteConfig, prefix: str, owner: str, namespace: str) -> None:
    """Attacker: an account named so that its namespace is the controller's (or kube-system) would get
    the owner NetworkPolicy and ResourceQuota applied there, and its app run next to the controller."""
    hostile = replace(site, namespace_prefix=prefix, controller_namespace="spaceport-system")
    with pytest.raises(RuntimeFailure, match=f"maps to the namespace '{namespace}'"):
        objects.owner_objects(owner, {}, hostile)
    spec = make_spec(space=f"{owner}/demo")
    with pytest.raises(RuntimeFailure, match="not an owner namespace"):
        objects.instance_objects(spec, hostile)


def all_objects(site: SiteConfig) -> list[dict[str, Any]]:
    specs = [
        make_spec(),
        make_spec("t4-small", Accelerators("nvidia-t4", ("0",))),
        make_spec("a10g-largex2", Accelerators("nvidia-a10g", ("0", "1"))),
        make_spec("ascend-910b-x1", Accelerators("ascend-910b", ("0",)), space="Org_X/npu.demo"),
    ]
    result: list[dict[str, Any]] = []
    for spec in specs:
        owner = objects.owner_of(spec.space_id)
        result += objects.owner_objects(owner, {"nvidia-t4": 1}, site) + objects.instance_objects(spec, site)
    return result


@pytest.mark.parametrize("version", [K8S_VERSION, "1.30.0"])
def test_every_object_validates_against_the_kubernetes_schema(site: SiteConfig, version: str) -> None:
    assert kubernetes_validate.utils.latest_version() >= "1.37"
    for obj in all_objects(site):
        kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError


def test_validation_catches_a_broken_object(site: SiteConfig) -> None:
    broken = objects.deployment(make_spec(), site)
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
