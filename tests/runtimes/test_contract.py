"""One contract suite over every runtime that runs here: local (sandboxed) and docker.

The run-environment tests (envreport fixture) hold every runtime to the hosted layout: code at a writable
/home/user/app that is the working directory, HOME=/home/user, SYSTEM=spaces, SPACE_*, the app's own
localhost, no proxy variable; the kubernetes runtime's pod spec is held to the same environment in
tests/runtimes/kubernetes/test_k8s_objects.py (no cluster can run here).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from builder.artifact import ImageArtifact, VenvArtifact
from controller.runtimes import procs
from controller.runtimes.base import Endpoint, HardwareSpec, InstanceSpec, Runtime, State
from controller.runtimes.docker import DockerRuntime
from controller.runtimes.health import wait_healthy
from controller.runtimes.local import LocalRuntime

HARDWARE = HardwareSpec(cpu=1.0, memory_mb=256, pids=64, disk_mb=64)


@dataclass
class Harness:
    kind: str
    runtime: Any
    make_runtime: Any
    artifact: Any
    names: list[str] = field(default_factory=list)

    def spec(self, name: str | None = None, space_id: str | None = None, **env: str) -> InstanceSpec:
        name = name or f"t{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return InstanceSpec(name=name, space_id=space_id or f"test/{name}", artifact=self.artifact, env=env,
                            hardware=HARDWARE)  # fmt: skip

    def identity(self, runtime: Any, name: str) -> str:
        return str(runtime.pid(name) if self.kind == "local" else runtime.container_id(name))

    def kill_app(self, name: str) -> None:
        """Kill the app from outside, as the OOM killer or a crash would."""
        if self.kind == "docker":
            self.runtime.client.containers.get(f"spaceport-{name}").kill()
            return
        pid = self.runtime.pid(name)
        apps = [p for p in procs.descendants(pid) if b"app.py" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert apps, "the app process was not found below its supervisor"
        os.kill(apps[-1], signal.SIGKILL)


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
async def harness(request: pytest.FixtureRequest, tmp_path: Path, sources: Path, system_venv: Path) -> AsyncIterator[Harness]:
    if request.param == "local":
        request.getfixturevalue("sandbox_ok")
        protected = [tmp_path / "data"]

        def make() -> Runtime:
            return LocalRuntime(tmp_path / "state", sandbox="bwrap", protected_paths=protected, stop_timeout=5)

        artifact: Any = VenvArtifact(venv=system_venv, source=sources / "echo", command=("python", "app.py"), port=7860)
    else:
        docker_host = request.getfixturevalue("docker_host")
        image = request.getfixturevalue("test_image")

        def make() -> Runtime:
            return DockerRuntime(docker_host, stop_timeout=5)

        artifact = ImageArtifact(image=image, port=7860)
    h = Harness(request.param, make(), make, artifact)
    yield h
    for name in h.names:
        with contextlib.suppress(Exception):
            await h.runtime.remove(name)


async def get(endpoint: Endpoint, timeout: float = 5.0, path: str = "/hello") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(endpoint.url + path) as response,
    ):
        return response.status, await response.text()


async def started(h: Harness, spec: InstanceSpec) -> Endpoint:
    endpoint = await h.runtime.start(spec)
    assert await wait_healthy(endpoint, timeout=60), (await h.runtime.status(spec.name)).message
    return endpoint


async def wait_state(runtime: Any, name: str, state: State, attempts: int = 200) -> Any:
    for _ in range(attempts):
        status = await runtime.status(name)
        if status.state == state:
            return status
        await asyncio.sleep(0.05)
    return await runtime.status(name)


async def collect_logs(runtime: Any, name: str, expect: tuple[str, ...] = (), within: float = 15.0) -> str:
    """The instance's log so far; waits (bounded) until every `expect` text has reached it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        text = "\n".join([line async for line in runtime.logs(name, follow=False)])
        if all(e in text for e in expect) or asyncio.get_running_loop().time() > deadline:
            return text
        await asyncio.sleep(0.2)


async def test_start_serves_and_is_listed(harness: Harness) -> None:
    spec = harness.spec()
    endpoint = await started(harness, spec)
    code, body = await get(endpoint)
    assert code == 200 and spec.space_id in body
    status = await harness.runtime.status(spec.name)
    assert status.state == State.RUNNING and status.endpoint == endpoint
    assert status.labels["spaceport.space"] == spec.space_id
    listed = {s.name: s for s in await harness.runtime.list()}
    assert listed[spec.name].state == State.RUNNING
    before = harness.identity(harness.runtime, spec.name)
    assert await harness.runtime.start(spec) == endpoint  # idempotent
    assert harness.identity(harness.runtime, spec.name) == before
    logs = await collect_logs(harness.runtime, spec.name, expect=("echo app listening", "GET /hello"))
    assert "echo app listening" in logs and "GET /hello" in logs


async def test_freeze_hangs_requests_until_thaw(harness: Harness) -> None:
    spec = harness.spec()
    endpoint = await started(harness, spec)
    await harness.runtime.freeze(spec.name)
    assert (await harness.runtime.status(spec.name)).state == State.FROZEN
    with pytest.raises(asyncio.TimeoutError):
        await get(endpoint, timeout=1.5)
    await harness.runtime.thaw(spec.name)
    assert (await harness.runtime.status(spec.name)).state == State.RUNNING
    assert (await get(endpoint))[0] == 200


async def test_stop_keeps_instance_and_start_reuses_it(harness: Harness) -> None:
    spec = harness.spec()
    await started(harness, spec)
    before = harness.identity(harness.runtime, spec.name)
    await harness.runtime.stop(spec.name)
    status = await harness.runtime.status(spec.name)
    assert status.state == State.EXITED
    assert spec.name in {s.name for s in await harness.runtime.list()}
    endpoint = await started(harness, spec)
    assert (await get(endpoint))[0] == 200
    if harness.kind == "docker":
        assert harness.identity(harness.runtime, spec.name) == before  # same container, just started
    logs = await collect_logs(harness.runtime, spec.name)
    for _ in range(75):  # container logs can trail the request by a moment
        if logs.count("echo app listening") >= 2:
            break
        await asyncio.sleep(0.2)
        logs = await collect_logs(harness.runtime, spec.name)
    assert logs.count("echo app listening") == 2


async def test_killed_app_reports_exit_code_and_log_tail(harness: Harness) -> None:
    spec = harness.spec()
    await started(harness, spec)
    harness.kill_app(spec.name)
    status = await wait_state(harness.runtime, spec.name, State.EXITED)
    assert status.state == State.EXITED
    assert status.exit_code not in (None, 0)
    assert "echo app listening" in status.message


async def test_new_runtime_object_adopts_running_instance(harness: Harness) -> None:
    spec = harness.spec()
    endpoint = await started(harness, spec)
    before = harness.identity(harness.runtime, spec.name)
    restarted = harness.make_runtime()
    listed = {s.name: s for s in await restarted.list()}
    assert listed[spec.name].state == State.RUNNING and listed[spec.name].endpoint == endpoint
    assert harness.identity(restarted, spec.name) == before
    assert await restarted.start(spec) == endpoint
    assert harness.identity(restarted, spec.name) == before
    await restarted.stop(spec.name)
    assert (await harness.runtime.status(spec.name)).state == State.EXITED


async def test_remove_deletes_everything(harness: Harness) -> None:
    spec = harness.spec()
    await started(harness, spec)
    await harness.runtime.remove(spec.name)
    assert (await harness.runtime.status(spec.name)).state == State.MISSING
    assert spec.name not in {s.name for s in await harness.runtime.list()}
    if harness.kind == "local":
        assert not (harness.runtime.instances / spec.name).exists()
    await harness.runtime.remove(spec.name)  # idempotent


async def test_changed_spec_replaces_instance(harness: Harness) -> None:
    spec = harness.spec()
    await started(harness, spec)
    changed = InstanceSpec(name=spec.name, space_id=spec.space_id, artifact=spec.artifact, env={"NEW": "1"},
                           hardware=spec.hardware)  # fmt: skip
    endpoint = await started(harness, changed)
    assert (await get(endpoint))[0] == 200
    assert len([s for s in await harness.runtime.list() if s.name == spec.name]) == 1


# ---------------------------------------------------------------- the run environment (envreport)
LEAKED_PROXY = "http://host-proxy.invalid:3128"


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
async def env_harness(request: pytest.FixtureRequest, tmp_path: Path, sources: Path, system_venv: Path,
                      monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:  # fmt: skip
    """The envreport app on each runtime, with the host's proxy settings present wherever a runtime
    could pick them up (the controller's environment, the docker client's config.json)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, LEAKED_PROXY)
    if request.param == "local":
        request.getfixturevalue("sandbox_ok")

        def make() -> Runtime:
            return LocalRuntime(tmp_path / "state", sandbox="bwrap", protected_paths=[tmp_path / "data"], stop_timeout=5)

        source = sources / "envreport"  # the command names the app by its host path, as builder/venv.py does
        artifact: Any = VenvArtifact(venv=system_venv, source=source, command=("python", str(source / "app.py")),
                                     port=7860)  # fmt: skip
    else:
        docker_host = request.getfixturevalue("docker_host")
        image = request.getfixturevalue("envreport_image")
        config = tmp_path / "docker-config"
        config.mkdir()
        proxies = {"default": {"httpProxy": LEAKED_PROXY, "httpsProxy": LEAKED_PROXY, "noProxy": "x"}}
        (config / "config.json").write_text(json.dumps({"proxies": proxies}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))

        def make() -> Runtime:
            return DockerRuntime(docker_host, stop_timeout=5)

        artifact = ImageArtifact(image=image, port=7860)
    h = Harness(request.param, make(), make, artifact)
    yield h
    for name in h.names:
        with contextlib.suppress(Exception):
            await h.runtime.remove(name)


async def env_report(endpoint: Endpoint, path: str = "/") -> dict[str, Any]:
    code, body = await get(endpoint, timeout=15, path=path)
    assert code == 200, body
    return dict(json.loads(body))


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts} | {
            ".": oct(root.stat().st_mode)}  # fmt: skip


async def test_app_sees_the_hosted_run_environment(env_harness: Harness) -> None:
    name = f"t{uuid.uuid4().hex[:12]}"
    spec = env_harness.spec(name, space_id=f"alice/{name}", SPACE_HOST=f"alice-{name}.apps.example",
                            SPACE_TITLE="Env Report", SYSTEM="not-spaces", MY_VAR="kept")  # fmt: skip
    report = await env_report(await started(env_harness, spec))
    assert report["cwd"] == "/home/user/app" and report["file"] == "/home/user/app/app.py", report
    assert report["cwd_writable"] is True, report
    assert report["localhost"] == 200, report
    assert report["proxies"] == [], report
    assert report["env"] | {"USER": "user"} == {
        "HOME": "/home/user", "SYSTEM": "spaces", "USER": "user", "SPACE_ID": f"alice/{name}",
        "SPACE_AUTHOR_NAME": "alice", "SPACE_REPO_NAME": name, "SPACE_TITLE": "Env Report",
        "SPACE_HOST": f"alice-{name}.apps.example", "PYTHONPATH": "/home/user/app",
        "GRADIO_ALLOW_FLAGGING": "never", "GRADIO_NUM_PORTS": "1",
    }, report  # fmt: skip
    assert report["user"] == "user"
    if env_harness.kind == "docker":
        assert report["uid"] == 1000
    else:  # its own unprivileged uid (isolation between spaces), named "user" like the hosted one
        assert report["uid"] >= 100_000 and report["uid"] != os.getuid()
    assert {"app.py", "data/keep.txt", "notes.txt"} <= set(report["files"])


async def test_writes_next_to_the_code_never_reach_the_shared_snapshot(env_harness: Harness, sources: Path) -> None:
    """An attacker rewrites, deletes and plants files in /home/user/app: its own copy changes, the
    snapshot on the host, a second instance of the same artifact and a duplicate space do not."""
    snapshot = sources / "envreport"
    before = tree_digest(snapshot)
    name = f"t{uuid.uuid4().hex[:12]}"
    attacker = env_harness.spec(name, space_id=f"mallory/{name}", ENVREPORT_SNAPSHOT=str(snapshot))
    endpoint = await started(env_harness, attacker)
    pristine = await env_report(endpoint)
    results = await env_report(endpoint, "/tamper")
    assert {k: v for k, v in results.items() if k.startswith(("rewrite", "append", "add", "delete", "chmod"))} == {
        "rewrite app.py": "done", "append keep.txt": "done", "add planted.txt": "done", "delete notes.txt": "done",
        "chmod data": "done",
    }, results  # fmt: skip
    escaped = {k: v for k, v in results.items() if "snapshot" in k or "/run/" in k if not str(v).startswith("refused")}
    assert not escaped, results
    changed = await env_report(endpoint)
    assert changed["app_py"] == '"""tampered"""' and "data/planted.txt" in changed["files"], changed
    assert "notes.txt" not in changed["files"] and changed["keep"] == "kept line"
    assert tree_digest(snapshot) == before
    for other in (env_harness.spec(space_id=f"mallory/{name}"), env_harness.spec(space_id=f"bob/{name}-copy")):
        seen = await env_report(await started(env_harness, other))  # same commit; then a duplicate space
        assert (seen["app_py"], seen["files"], seen["keep"]) == (pristine["app_py"], pristine["files"], "kept line"), seen
    if env_harness.kind == "local":  # a restart starts from the snapshot again (the hosted disk is ephemeral)
        await env_harness.runtime.stop(attacker.name)
        restarted = await env_report(await started(env_harness, attacker))
        assert (restarted["app_py"], restarted["files"]) == (pristine["app_py"], pristine["files"]), restarted
