"""k8s/ on a cluster, as rendered (every overlay): space pods are isolated from the control plane, Redis wants
a password that every broker URL carries from a Secret, and the buildah worker runs unprivileged inside Pod
Security `baseline` and reaches the registry (issue 14).

The space side is not in the manifests: the controller creates each owner's namespace and its NetworkPolicy
at run time (controller/runtimes/kubernetes/objects.py), so the pods and policies checked here are made by
the runtime's own builders, from the site options the rendered controller's settings give."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from builder.artifact import ImageArtifact
from controller.config import ENV_PREFIX, Settings
from controller.runtimes.base import HardwareSpec, InstanceSpec, RuntimeFailure
from controller.runtimes.factory import kubernetes_site
from controller.runtimes.kubernetes import objects
from controller.runtimes.kubernetes.objects import SiteConfig
from tests.runtimes.kubernetes.k8s_policy import (
    NAME_LABEL,
    egress_peers_admitting,
    governs,
    ingress_admits,
    kubelet_env,
    selects,
)
from tests.runtimes.kubernetes.test_k8s_manifests import (
    DIRECTORIES,
    K8S,
    by_kind,
    render,
    spaceport_containers,
)
from tests.support.server import free_port
from tests.support.tiers import missing

JSON = dict[str, Any]
REDIS_PASSWORD = "5f1c0ffee0ddba11c0de5eed0badcafe"
CLUSTER_INTERNAL = ["10.96.0.1", "10.244.3.7", "172.20.0.10", "192.168.49.2", "100.64.0.10", "169.254.169.254",
                    "fd00:10:96::1", "fe80::1"]  # service / pod / node ranges of common clusters, the metadata address
# Pod Security Standards, `baseline` level: capabilities a container may add.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def admin_secrets() -> dict[tuple[str, str], str]:
    """(Secret, key) -> a value, for every `kubectl create secret generic NAME --from-literal=KEY=...` in
    k8s/README.md: what the admin is told to create, and so all the manifests may reference."""
    text = (K8S / "README.md").read_text()
    found: dict[tuple[str, str], str] = {}
    for command in re.findall(r"create secret generic (.+?)(?=\n(?!\s)|\Z)", text.replace("\\\n", " "), re.S):
        name, *_ = command.split()
        for key in re.findall(r"--from-literal=([A-Za-z0-9_.-]+)=", command):
            found[(name, key)] = REDIS_PASSWORD if key == "password" else f"value-of-{name}-{key}"
    return found


def workloads(docs: list[JSON]) -> dict[str, JSON]:
    """Pod templates of the rendered Deployments and StatefulSets, by workload name."""
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def namespace_labels(docs: list[JSON], name: str) -> dict[str, str]:
    rendered = next(d for d in by_kind(docs, "Namespace") if d["metadata"]["name"] == name)
    return {**rendered["metadata"].get("labels", {}), NAME_LABEL: name}


def configmaps(docs: list[JSON]) -> dict[str, dict[str, str]]:
    return {c["metadata"]["name"]: c.get("data", {}) for c in by_kind(docs, "ConfigMap")}


def container_env(docs: list[JSON], workload: str, container: str) -> dict[str, str]:
    pod = workloads(docs)[workload]["spec"]
    found = next(c for c in pod["containers"] if c["name"] == container)
    return kubelet_env(found, configmaps(docs), admin_secrets())


@pytest.fixture
def site_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """SiteConfig as the rendered controller builds it: its environment, its hardware ConfigMap's files."""
    def build(docs: list[JSON]) -> SiteConfig:
        env = container_env(docs, "spaceport", "controller")
        pod = workloads(docs)["spaceport"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "hardware")["configMap"]["name"]
        for name, text in configmaps(docs)[volume].items():
            (tmp_path / name).write_text(text)
        for var in [v for v in os.environ if v.upper().startswith(ENV_PREFIX)]:
            monkeypatch.delenv(var)
        for var, value in env.items():
            if var.startswith(ENV_PREFIX):
                monkeypatch.setenv(var, value)
        monkeypatch.setenv("SPACEPORT_HARDWARE_CATALOG", str(tmp_path / Path(env["SPACEPORT_HARDWARE_CATALOG"]).name))
        monkeypatch.setenv("SPACEPORT_DATA_DIR", str(tmp_path / "data"))
        return kubernetes_site(Settings())
    yield build


def app_pod(site: SiteConfig, space: str = "alice/demo") -> tuple[dict[str, str], str, dict[str, str], list[JSON]]:
    """(pod labels, namespace, namespace labels, owner objects) of a space's pod, by the runtime's builders."""
    spec = InstanceSpec(name=space.replace("/", "-") + "-b1", space_id=space,
                        artifact=ImageArtifact(image="registry.spaceport.svc.cluster.local:5000/spaces/x:0123456789ab",
                                               port=7860),
                        env={}, hardware=HardwareSpec(flavor="cpu-basic", cpu=2.0, memory_mb=16384))
    owner = objects.owner_of(space)
    owned = objects.owner_objects(owner, None, site)
    deployment = next(o for o in objects.instance_objects(spec, site) if o["kind"] == "Deployment")
    ns = owned[0]
    labels = {**ns["metadata"]["labels"], NAME_LABEL: ns["metadata"]["name"]}
    return deployment["spec"]["template"]["metadata"]["labels"], deployment["metadata"]["namespace"], labels, owned


# ---- 1. space pods: only the controller gets in, nothing internal is reachable ----------------------------


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_space_policy_selects_the_runtime_pods_and_admits_only_the_controller(directory: str, site_of: Any) -> None:
    docs = render(K8S / directory)
    site = site_of(docs)
    labels, namespace, ns_labels, owned = app_pod(site)
    policy = next(o for o in owned if o["kind"] == "NetworkPolicy")
    assert governs(policy, "Ingress", labels, namespace) and governs(policy, "Egress", labels, namespace)
    home = namespace_labels(docs, "spaceport")
    admitted = {name for name, pod in workloads(docs).items()
                if ingress_admits(policy, pod["metadata"]["labels"], home)}
    assert admitted == {"spaceport"}, "only the controller (API, proxy, data plane) may reach a space"
    other_labels, _, other_ns_labels, _ = app_pod(site, "bob/other")
    assert not ingress_admits(policy, other_labels, other_ns_labels), "another owner's space"
    same_owner, _, _, _ = app_pod(site, "alice/second")
    assert not ingress_admits(policy, same_owner, ns_labels), "the owner's other space"


def covered(address: str, blocks: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in map(ipaddress.ip_network, blocks))


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_space_policy_allows_dns_and_public_egress_only(directory: str, site_of: Any) -> None:
    docs = render(K8S / directory)
    _, _, _, owned = app_pod(site_of(docs))
    policy = next(o for o in owned if o["kind"] == "NetworkPolicy")
    home = namespace_labels(docs, "spaceport")
    for name, pod in workloads(docs).items():  # controller, worker, beat, Redis, PostgreSQL, the registry
        assert not egress_peers_admitting(policy, pod["metadata"]["labels"], home), f"a space reaches {name}"
    dns_labels = {"k8s-app": "kube-dns"}
    kube_system = {NAME_LABEL: "kube-system"}
    dns_rules = egress_peers_admitting(policy, dns_labels, kube_system)
    assert len(dns_rules) == 1 and {(p["protocol"], p["port"]) for p in dns_rules[0]["ports"]} == {
        ("UDP", 53), ("TCP", 53)}
    assert not egress_peers_admitting(policy, {"component": "kube-apiserver"}, kube_system)
    blocks = [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert {b["cidr"] for b in blocks} == {"0.0.0.0/0", "::/0"}
    excepted = [cidr for b in blocks for cidr in b.get("except", [])]
    for address in CLUSTER_INTERNAL:
        assert covered(address, excepted), f"{address} is reachable from a space"
    assert not covered("1.1.1.1", excepted) and not covered("2606:4700::1111", excepted), "public egress"


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_redis_and_postgres_admit_only_spaceport_pods(directory: str, site_of: Any) -> None:
    """Whatever addresses the cluster uses: the namespace's own policies keep every space pod (and anything
    but Spaceport's own pods) away from the broker and the database, and admit every pod that uses them."""
    docs = render(K8S / directory)
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    pods = workloads(docs)
    home = namespace_labels(docs, "spaceport")
    for service, workload, variable in (("spaceport-redis", "spaceport-redis", "SPACEPORT_BROKER_URL"),
                                        ("spaceport-postgres", "spaceport-postgres", "SPACEPORT_DATABASE_URL")):
        policy = policies[service]
        assert governs(policy, "Ingress", pods[workload]["metadata"]["labels"], "spaceport")
        users = {f"{n.split('/')[0]}" for n, c in spaceport_containers(docs).items()
                 if variable in kubelet_env(c, configmaps(docs), admin_secrets())}
        admitted = {n for n, pod in pods.items() if ingress_admits(policy, pod["metadata"]["labels"], home)}
        assert users and admitted == users, f"{service}: admitted {admitted}, used by {users}"
        labels, _, ns_labels, _ = app_pod(site_of(docs))
        assert not ingress_admits(policy, labels, ns_labels), f"a space pod reaches {service}"
        forged = {**labels, "app.kubernetes.io/name": "spaceport", "app.kubernetes.io/component": "controller"}
        assert not ingress_admits(policy, forged, ns_labels), "labels alone, outside the namespace, do not pass"


@pytest.mark.parametrize(("owner", "name"), [("spaceport", "controller"), ("controller", "spaceport"),
                                             ("kube-system", "redis"), ("Spaceport", "worker"), ("a" * 80, "b" * 80),
                                             ("system", "app.kubernetes.io")])
def test_attacker_chosen_names_never_reach_the_control_plane(owner: str, name: str, site_of: Any) -> None:
    """An ordinary account picks its name and its spaces' names: none makes its pods pass for Spaceport's,
    or puts them in Spaceport's namespace (the runtime refuses such a namespace instead)."""
    docs = render(K8S / "base")
    site = site_of(docs)
    try:
        labels, namespace, ns_labels, owned = app_pod(site, f"{owner}/{name}")
    except RuntimeFailure as exc:
        assert "not an owner namespace" in str(exc)
        return
    assert namespace != "spaceport" and namespace.startswith(site.namespace_prefix)
    assert labels["app.kubernetes.io/name"] == "space"
    for policy in [*by_kind(docs, "NetworkPolicy"), next(o for o in owned if o["kind"] == "NetworkPolicy")]:
        assert not ingress_admits(policy, labels, ns_labels), policy["metadata"]["name"]
    assert not selects(site.controller_pod_labels and {"matchLabels": dict(site.controller_pod_labels)}, labels)


# ---- 2. Redis wants a password, every broker URL carries it from the Secret --------------------------------


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_redis_requires_the_secret_password(directory: str) -> None:
    docs = render(K8S / directory)
    redis = workloads(docs)["spaceport-redis"]["spec"]["containers"][0]
    args = redis["args"]
    assert args[0] == "redis-server" and "--requirepass" in args
    env = kubelet_env(redis, configmaps(docs), admin_secrets())
    assert expand_args(args, env)[args.index("--requirepass") + 1] == REDIS_PASSWORD
    probe = " ".join(redis["readinessProbe"]["exec"]["command"])
    assert "redis-cli ping" in probe and env["REDISCLI_AUTH"] == REDIS_PASSWORD, "the probe authenticates"
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "spaceport-redis")
    containers = spaceport_containers(docs)
    assert {"spaceport/controller", "spaceport-worker/worker", "spaceport-beat/beat"} <= set(containers)
    for name, container in containers.items():
        env = kubelet_env(container, configmaps(docs), admin_secrets())
        urls = {k: v for k, v in env.items() if v.startswith(("redis://", "rediss://"))}
        assert set(urls) == {"SPACEPORT_BROKER_URL"}, f"{name}: {sorted(urls)}"
        url = urlsplit(urls["SPACEPORT_BROKER_URL"])
        assert url.password == REDIS_PASSWORD, f"{name}: the broker URL carries no password"
        assert (url.hostname, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
        literal = next(v for v in container["env"] if v["name"] == "SPACEPORT_BROKER_URL")
        assert "$(" in literal["value"], f"{name}: the password must come from the Secret, not the manifest"
    for data in configmaps(docs).values():
        assert not [v for v in data.values() if "redis://" in v], "a broker URL in a ConfigMap has no password"


def expand_args(args: list[str], env: dict[str, str]) -> list[str]:
    from tests.runtimes.kubernetes.k8s_policy import expand

    return [expand(a, env) for a in args]


def test_readme_names_every_secret_the_manifests_reference() -> None:
    told = set(admin_secrets())
    assert ("spaceport-redis", "password") in told
    for directory in DIRECTORIES:
        docs = render(K8S / directory)
        for pod in workloads(docs).values():
            for container in pod["spec"]["containers"]:
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert (ref["name"], ref["key"]) in told, f"{directory}: k8s/README.md step 5 lacks {ref}"


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(server).exists():
        missing("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password=REDIS_PASSWORD, socket_timeout=1).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_rendered_broker_url_authenticates(redis_with_password: int) -> None:
    """The URL the kubelet gives the worker is one Celery's transport and the route bus connect with; a URL
    without the password is refused by this Redis (so an unprotected one would be noticed)."""
    import kombu
    import redis

    docs = render(K8S / "base")
    url = container_env(docs, "spaceport-worker", "worker")["SPACEPORT_BROKER_URL"]
    local = url.replace("@spaceport-redis:6379/", f"@127.0.0.1:{redis_with_password}/")
    assert redis.Redis.from_url(local, socket_timeout=2).ping()
    with kombu.Connection(local, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)
        queue = connection.SimpleQueue("spaceport-k8s-test")
        queue.put({"ok": 1})
        assert queue.get(timeout=2).payload == {"ok": 1}
        queue.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(f"redis://127.0.0.1:{redis_with_password}/0", socket_timeout=2).ping()


# ---- 3. the buildah worker: unprivileged, baseline, reaches the registry -----------------------------------


def worker(docs: list[JSON]) -> JSON:
    return next(c for c in workloads(docs)["spaceport-worker"]["spec"]["containers"] if c["name"] == "worker")


def baseline_violations(pod: JSON) -> list[str]:
    """What Pod Security `baseline` (the spaceport namespace's level) refuses in a pod spec."""
    spec = pod["spec"]
    found = [f"host namespace {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    found += [f"hostPath volume {v['name']}" for v in spec.get("volumes", []) if "hostPath" in v]
    for level in [spec.get("securityContext", {}), *(c.get("securityContext", {}) for c in spec["containers"])]:
        if (level.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append("seccomp Unconfined")
        if (level.get("appArmorProfile") or {}).get("type") == "Unconfined":
            found.append("AppArmor Unconfined")
    for container in spec["containers"]:
        context = container.get("securityContext", {})
        if context.get("privileged"):
            found.append(f"{container['name']}: privileged")
        extra = set((context.get("capabilities") or {}).get("add", [])) - BASELINE_CAPABILITIES
        found += [f"{container['name']}: capability {cap}" for cap in sorted(extra)]
        if context.get("procMount", "Default") != "Default":
            found.append(f"{container['name']}: procMount")
        found += [f"{container['name']}: hostPort" for p in container.get("ports", []) if p.get("hostPort")]
    return found


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_every_pod_passes_the_namespaces_pod_security_level(directory: str) -> None:
    docs = render(K8S / directory)
    assert namespace_labels(docs, "spaceport")["pod-security.kubernetes.io/enforce"] == "baseline"
    for name, pod in workloads(docs).items():
        assert not baseline_violations(pod), f"{name}: {baseline_violations(pod)}"


def test_baseline_check_refuses_what_baseline_refuses() -> None:
    """The checker above can fail: each of these is refused by Pod Security baseline."""
    container = {"name": "c", "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]},
                                                  "seccompProfile": {"type": "Unconfined"}, "procMount": "Unmasked"}}
    pod = {"spec": {"hostPID": True, "containers": [container], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}
    assert len(baseline_violations(pod)) == 6


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_the_worker_builds_with_unprivileged_buildah(directory: str) -> None:
    docs = render(K8S / directory)
    container = worker(docs)
    env = kubelet_env(container, configmaps(docs), admin_secrets())
    assert env["SPACEPORT_IMAGE_BUILDER"] == "buildah" and env["STORAGE_DRIVER"] == "vfs"
    context = container["securityContext"]
    assert context["privileged"] is False and context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SETUID", "SETGID", "SYS_CHROOT"]}
    assert context["allowPrivilegeEscalation"] is True, "newuidmap's file capabilities need it"
    assert context["seccompProfile"] == {"type": "Localhost", "localhostProfile": "spaceport/buildah-seccomp.json"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/home/spaceport/.local/share/containers" in mounts, "buildah's storage on a volume"
    pod = workloads(docs)["spaceport-worker"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000 and "hostUsers" not in pod
    assert not pod.get("hostNetwork") and not [v for v in pod["volumes"] if "hostPath" in v]


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_the_worker_reaches_the_registry(directory: str) -> None:
    """buildah pushes to SPACEPORT_REGISTRY: the rendered registries.conf lets it speak plain HTTP to exactly
    that host, and no NetworkPolicy keeps the worker from the registry's pod."""
    docs = render(K8S / directory)
    container = worker(docs)
    env = kubelet_env(container, configmaps(docs), admin_secrets())
    host = env["SPACEPORT_REGISTRY"].split("/", 1)[0]
    conf_path = Path(env["CONTAINERS_REGISTRIES_CONF"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(conf_path.parent))
    pod = workloads(docs)["spaceport-worker"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    conf = tomllib.loads(configmaps(docs)[volume["configMap"]["name"]][conf_path.name])
    entry = next(r for r in conf["registry"] if r["location"] == host)
    assert entry["insecure"] is True
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "registry")
    assert host == f"registry.spaceport.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    pods = workloads(docs)
    worker_labels, registry_labels = (pods[n]["metadata"]["labels"] for n in ("spaceport-worker", "registry"))
    home = namespace_labels(docs, "spaceport")
    for policy in by_kind(docs, "NetworkPolicy"):
        if governs(policy, "Ingress", registry_labels, "spaceport"):
            assert ingress_admits(policy, worker_labels, home), policy["metadata"]["name"]
        if governs(policy, "Egress", worker_labels, "spaceport"):
            assert egress_peers_admitting(policy, registry_labels, home), policy["metadata"]["name"]
