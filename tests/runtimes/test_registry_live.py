"""The registry pipeline (issue 14), for real: Debian's docker-registry, the test Docker engine as node A
(builds and pushes) and a second dockerd as node B (runs, pulling from the registry only).

* builder/registry.push_image: a few log lines, the digest; an unreachable registry is a BUILD_ERROR
  naming it and what to fix.
* DockerRuntime on node B pulls a missing image from SPACEPORT_REGISTRY before creating the container,
  and never pulls a ref outside it; a failed pull names the image and the registry's answer.
* artifact_gc.delete_from_registry deletes a manifest through the registry's API, but not one another
  kept tag of the same repository shares.
* End to end: `spaceport worker` on node A and `spaceport serve --no-worker` on node B (PostgreSQL +
  Redis, one data dir): a pushed static space is built on A, pushed, pulled by B and served by B's proxy.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

from builder.artifact import ImageArtifact
from builder.errors import BuildFailure
from builder.registry import push_image
from controller.runtimes.base import InstanceSpec, RuntimeFailure
from controller.runtimes.docker import DockerRuntime
from controller.services.artifact_gc import delete_from_registry
from tests.security import host_get
from tests.support.databases import fresh_database
from tests.support.gitrepo import make_repo, push, remote
from tests.support.images import ensure_base_images
from tests.support.nodes import second_engine
from tests.support.registry import local_registry, registry_available, repositories
from tests.support.replicas import redis_db, replica
from tests.support.server import ROOT, LiveServer, free_port
from tests.support.spaces import wait_stage
from tests.support.tiers import missing

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
PROGRESS = re.compile(r"^pushing: [0-9.]+ of [0-9.]+ MiB sent, [0-9]+ layers done$")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not registry_available():
        missing("docker-registry is not installed (Debian package docker-registry; scripts/test-services.sh)")
    with local_registry(tmp_path_factory.mktemp("registry")) as addr:
        yield addr


@pytest.fixture(scope="module")
def node_a(docker_host: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_host, timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="module")
def node_b() -> Iterator[str]:
    with second_engine() as host:
        yield host


def tiny_image(client: docker.DockerClient, ref: str, body: bytes = b"hello") -> str:
    """A one-layer image (a single file) tagged `ref` on the engine: pushes in well under a second."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    repository, _, tag = ref.rpartition(":")
    client.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag)
    return ref


def manifest_status(addr: str, name: str, tag: str) -> int:
    request = urllib.request.Request(f"http://{addr}/v2/{name}/manifests/{tag}", method="HEAD", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# ---- push -------------------------------------------------------------------------------------------------


def test_push_sends_the_image_with_a_few_log_lines_and_returns_its_digest(registry: str,
                                                                           node_a: docker.DockerClient) -> None:
    ref = tiny_image(node_a, f"{registry}/spaces/push-{uuid.uuid4().hex[:8]}:0123456789ab")
    lines: list[str] = []
    try:
        digest = push_image(node_a, ref, log=lines.append)
    finally:
        node_a.images.remove(ref)
    assert digest.startswith("sha256:")
    assert ref.split("/", 1)[1].rpartition(":")[0] in repositories(registry)
    assert len(lines) <= 3, lines  # start and result, not one line per layer chunk
    assert lines[0] == f"pushing image {ref} to the registry {registry}"
    assert lines[-1].startswith(f"pushed {ref} (1 layers sent") and digest in lines[-1]


def test_a_push_to_an_unreachable_registry_is_a_build_error_naming_it_and_the_fix(
        node_a: docker.DockerClient) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    ref = tiny_image(node_a, f"{dead}/spaces/alice-demo:0123456789ab")
    try:
        with pytest.raises(BuildFailure) as failure:
            push_image(node_a, ref, log=lambda _line: None)
    finally:
        node_a.images.remove(ref)
    assert failure.value.stage == "BUILD_ERROR"
    message = failure.value.message
    assert f"pushing {ref} to the registry {dead} failed" in message
    assert "connection refused" in message.lower()
    assert "SPACEPORT_REGISTRY" in message and "reachable" in message


# ---- pull on node B ---------------------------------------------------------------------------------------


def spec_for(image: str) -> InstanceSpec:
    return InstanceSpec(name=f"reg-{uuid.uuid4().hex[:6]}", space_id="alice/demo",
                        artifact=ImageArtifact(image=image, port=8080))


def test_node_b_pulls_a_missing_image_from_the_registry_and_nothing_outside_it(
        registry: str, node_a: docker.DockerClient, node_b: str) -> None:
    ref = tiny_image(node_a, f"{registry}/spaces/pull-{uuid.uuid4().hex[:8]}:0123456789ab", b"from node A")
    push_image(node_a, ref, log=lambda _line: None)
    node_a.images.remove(ref)
    runtime = DockerRuntime(node_b, site="regtest", registry=f"{registry}/spaces")
    try:
        with pytest.raises(docker.errors.ImageNotFound):
            runtime.client.images.get(ref)
        runtime.ensure_image(spec_for(ref))
        assert ref in runtime.client.images.get(ref).tags
        runtime.ensure_image(spec_for(ref))  # present: no second pull needed (and none fails)

        with pytest.raises(RuntimeFailure) as outside:  # not under the registry: never pulled (no Docker Hub)
            runtime.ensure_image(spec_for("spaceport/alice-demo:0123456789ab"))
        assert "not on this Docker engine" in str(outside.value) and f"SPACEPORT_REGISTRY={registry}/spaces" in str(outside.value)

        gone = f"{registry}/spaces/never-pushed:0123456789ab"
        with pytest.raises(RuntimeFailure) as failed:
            runtime.ensure_image(spec_for(gone))
        text = str(failed.value)
        assert f"cannot pull the image {gone} from the registry {registry}" in text
        assert "not found" in text.lower() or "manifest unknown" in text.lower(), text
    finally:
        runtime.close()


# ---- garbage collection in the registry ------------------------------------------------------------------


def test_gc_deletes_a_manifest_but_not_one_a_kept_tag_shares(registry: str, node_a: docker.DockerClient) -> None:
    name = f"spaces/gc-{uuid.uuid4().hex[:8]}"
    old, twin = f"{registry}/{name}:aaaaaaaaaaaa", f"{registry}/{name}:bbbbbbbbbbbb"
    tiny_image(node_a, old, b"same content")
    node_a.images.get(old).tag(twin.rpartition(":")[0], twin.rpartition(":")[2])
    try:
        for ref in (old, twin):
            push_image(node_a, ref, log=lambda _line: None)
    finally:
        for ref in (old, twin):
            node_a.images.remove(ref)
    assert delete_from_registry(old, kept={twin}) == "shared"  # same digest: deleting it would delete twin
    assert manifest_status(registry, name, "bbbbbbbbbbbb") == 200
    assert delete_from_registry(old, kept=set()) == "deleted"
    assert manifest_status(registry, name, "aaaaaaaaaaaa") == 404
    assert delete_from_registry(old, kept=set()) == "missing"
    assert delete_from_registry(f"127.0.0.1:{free_port()}/spaces/x:aaaaaaaaaaaa", kept=set()) == "failed"


# ---- end to end: build on node A, run on node B -----------------------------------------------------------


# A docker space on the smallest bootstrapped base (Debian minbase, ~45 MB compressed: a push and a pull of
# it stay short on a loaded CI machine; the static pack's base is 1.3 GB): perl-base's sockets answer HTTP.
PERL_SPACE = {
    "README.md": "---\ntitle: Nodes\nsdk: docker\napp_port: 7860\nstartup_duration_timeout: 2m\n---\n",
    "Dockerfile": (
        "FROM debian:bookworm-slim\n"
        "COPY serve.pl /app/serve.pl\n"
        'CMD ["perl", "/app/serve.pl"]\n'
    ),
    "serve.pl": (
        "use IO::Socket::INET;\n"
        "my $s = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => 7860, Listen => 16, ReuseAddr => 1) or die $!;\n"
        "while (my $c = $s->accept) {\n"
        "  while (my $line = <$c>) { last if $line =~ /^\\r?$/ }\n"
        "  print $c \"HTTP/1.0 200 OK\\r\\nContent-Type: text/html\\r\\n\\r\\n<p>built on A, served from B</p>\\n\";\n"
        "  close $c;\n"
        "}\n"
    ),
}


@dataclass
class TwoNodes:
    server: LiveServer  # serve --no-worker, docker runtime on node B
    worker: subprocess.Popen[bytes]
    worker_log: Path
    registry: str
    node_b: docker.DockerClient
    token: str
    work: Path


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory, registry: str, docker_host: str, node_b: str,
              pg_url: str, redis_url: str) -> Iterator[TwoNodes]:
    ensure_base_images(docker_host)  # node A builds from the bootstrapped bases; node B has none
    work = tmp_path_factory.mktemp("two-nodes")
    prefix = f"{registry}/spaces"
    with fresh_database(pg_url) as db_url:
        broker = redis_db(redis_url, 9)
        server = replica(work / "data", db_url, broker, SPACEPORT_RUNTIME="docker", SPACEPORT_DOCKER_HOST=node_b,
                         SPACEPORT_REGISTRY=prefix)
        server.serve_args = ("--no-worker",)
        server.start(timeout=120)
        worker_log = work / "worker.log"
        env = {**server.env, "SPACEPORT_DOCKER_HOST": docker_host}  # the worker builds on node A
        with worker_log.open("wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "controller.cli", "worker", "--concurrency", "1"],
                                      env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        client = docker.DockerClient(base_url=node_b, timeout=120)
        try:
            yield TwoNodes(server, worker, worker_log, prefix, client, server.create_user("alice"), work)
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            server.close()
            client.close()


def test_a_space_built_on_node_a_runs_on_node_b_only_by_pulling_from_the_registry(
        two_nodes: TwoNodes, node_a: docker.DockerClient) -> None:
    site, b = two_nodes, two_nodes.node_b
    assert not [i for i in b.images.list() if any("alice-nodes" in t for t in i.tags)]  # node B has no such image
    repo = make_repo(site.work / "nodes", PERL_SPACE)
    started = time.monotonic()
    push(repo, remote(site.server.url, "alice", "nodes", "alice", site.token))
    state = wait_stage(site.server, "alice/nodes", {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR"}, timeout=300)
    assert state["stage"] == "RUNNING", f"{state}\n{site.worker_log.read_text(errors='replace')[-3000:]}"
    answer = host_get(site.server, "alice-nodes")
    assert answer.status_code == 200 and "built on A, served from B" in answer.text

    sha = _head(repo)
    ref = f"{site.registry}/alice-nodes:{sha[:12]}"
    assert "spaces/alice-nodes" in repositories(site.registry.split("/")[0])
    assert ref in b.images.get(ref).tags  # pulled onto node B
    assert node_a.images.get(ref)  # built (and kept) on node A
    container = b.containers.list(filters={"label": "spaceport.instance"})
    assert [c.image.tags for c in container] == [[ref]]
    assert not node_a.containers.list(all=True, filters={"ancestor": ref})  # nothing of it runs on node A
    log = httpx.get(f"{site.server.url}/api/spaces/alice/nodes/logs/build?follow=false", timeout=30).text
    push_lines = [json.loads(line[6:])["data"] for line in log.splitlines()
                  if line.startswith("data: ") and "push" in line.lower()]
    assert push_lines[0] == f"pushing image {ref} to the registry {site.registry.split('/')[0]}", push_lines
    assert push_lines[-1].startswith(f"pushed {ref} ("), push_lines
    # between them only the periodic summary (at most one per PROGRESS_EVERY), never the engine's per-layer chunks
    assert all(PROGRESS.match(line) for line in push_lines[1:-1]), push_lines
    print(f"push to RUNNING on node B: {time.monotonic() - started:.1f} s")


def _head(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
