"""Disk abuse (issue 19): a per-space disk quota, and unused build artifacts collected.

The site here is real (the API, the reconciler and its disk watch, SQLite, the bubblewrap-sandboxed local
runtime, the docker engine) but its spaces' builds are seeded rows pointing at a venv and a source laid
out exactly as builds lay them out (artifacts/venvs/KEY, artifacts/sources/OWNER/NAME/SHA): the builder
is tested elsewhere, and a Gradio build would cost a minute here for nothing this file checks.

* an app that creates many empty files (inodes, no data) past a 2 MiB quota is stopped with a message
  saying so, the space ends in RUNTIME_ERROR and stays there (no restart), its writes are freed and its
  log kept; one that nests directories too deep to measure is stopped too; on docker the same for a
  file written into the container's layer;
* garbage collection removes unused sources and venvs (planted ones, a deleted space's) and keeps
  what the current build of every space and the running instances use, and what an owner's build in
  progress may be reusing (also when that build starts while the collection is under way);
* deleting a space removes its exported sources, its venv (no other space uses it) and its instance's
  directory (home and logs).
The measure itself (sparse files, hard links, the overlay layer, SizeRw) is tests/runtimes/test_disk_usage.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uv
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from builder.artifact import Artifact, ImageArtifact, VenvArtifact, artifact_to_dict
from controller import cli
from controller.app import create_app
from controller.config import Settings
from controller.db.models import Build, Space, Variable, utcnow
from controller.runtimes.base import Runtime
from controller.runtimes.factory import protected_paths
from controller.runtimes.local import LocalRuntime
from controller.runtimes.localstate import MAX_DEPTH
from controller.runtimes.sandbox import sandbox_status
from controller.services import accounts, artifact_gc
from controller.services.diskquota import TOO_DEEP
from controller.services.platform import Platform
from tests.support.tiers import missing

QUOTA = 2 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
HOG = ROOT / "tests" / "fixtures" / "apps" / "diskhog"
SHA = "c0ffee" * 6 + "c0fe"


@dataclass
class Site:
    platform: Platform
    client: TestClient
    tokens: dict[str, str]

    @property
    def artifacts(self) -> Path:
        return self.platform.settings.artifacts_dir

    def runtime_json(self, space: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/spaces/{space}/runtime").json())

    def wait_stage(self, space: str, stages: set[str], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.runtime_json(space)
            if state["stage"] in stages:
                return state
            time.sleep(0.1)
        raise AssertionError(f"{space} never reached {stages}: {state}")

    def instances(self, slug: str) -> list[Path]:
        return sorted((self.platform.settings.runtime_dir / "instances").glob(f"sp-{slug}-*"))


def make_venv(artifacts: Path, key: str, owner: str) -> Path:
    """A venv where builds put theirs, with the marker naming its owner (as builder/venv.py writes it)."""
    venv = artifacts / "venvs" / key
    subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", "/usr/bin/python3", str(venv)], check=True)
    (venv / ".spaceport-env.json").write_text(json.dumps({"owner": owner}))
    return venv


def make_source(artifacts: Path, owner: str, name: str, sha: str = SHA) -> Path:
    source = artifacts / "sources" / owner / name / sha
    shutil.copytree(HOG, source)
    for path in [source, *source.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return source


def seed_space(platform: Platform, owner: str, name: str, artifact: Artifact | None,
               variables: dict[str, str] | None = None, status: str = "succeeded") -> int:  # fmt: skip
    """A space whose head commit's build finished with `artifact` (or is still `status`)."""
    with platform.tx() as session:
        account = accounts.get_account(session, owner)
        assert account is not None
        space = Space(owner_id=account.id, owner=account, name=name, slug=f"{owner}-{name}", sdk="gradio",
                      stage="APP_STARTING", card_data={}, head_sha=SHA)  # fmt: skip
        session.add(space)
        session.flush()
        build = Build(space_id=space.id, commit_sha=SHA, status=status, started_at=utcnow() - timedelta(hours=1),
                      finished_at=utcnow() - timedelta(hours=1), artifact=artifact_to_dict(artifact) if artifact else None)
        session.add(build)
        session.flush()
        if status == "succeeded":
            space.target_build_id = build.id
        for key, value in (variables or {}).items():
            session.add(Variable(space_id=space.id, key=key, value=value))
        return build.id


def settings_for(tmp: Path, runtime: str = "local", **extra: Any) -> Settings:
    return Settings(data_dir=tmp / "data", runtime=runtime, sandbox="bwrap", public_url="http://localhost:8000",  # type: ignore[arg-type]
                    apps_domain="localhost", reconcile_interval=0.2, space_disk_bytes=QUOTA,
                    space_disk_check_interval=0, **extra)  # fmt: skip


@contextlib.contextmanager
def running_site(settings: Settings, runtime: Callable[[Settings], Runtime], users: tuple[str, ...]) -> Iterator[Site]:
    platform = Platform(settings)
    platform.migrate()
    tokens = {}
    with platform.tx() as session:
        for name in users:
            tokens[name] = accounts.create_token(session, accounts.create_user(session, name))
    rt = runtime(settings)
    try:
        with TestClient(create_app(settings, platform=platform, runtime=rt)) as client:
            yield Site(platform, client, tokens)
    finally:  # the reconciler has stopped with the client: remove what it started
        asyncio.run(_remove_all(rt))
        platform.dispose()


async def _remove_all(runtime: Runtime) -> None:
    for status in await runtime.list():
        with contextlib.suppress(Exception):
            await runtime.remove(status.name)


def local_runtime(settings: Settings) -> Runtime:
    return LocalRuntime(settings.runtime_dir, sandbox="bwrap", protected_paths=protected_paths(settings), stop_timeout=5)


@pytest.fixture(scope="module")
def sandboxed() -> None:
    status = sandbox_status()
    if not status.available:
        missing(f"sandbox unavailable: {status.reason} ({status.fix})")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, sandboxed: None) -> Iterator[Site]:
    """alice/hog: creates 600 empty files (about 2.4 MiB of inodes) before serving; bob/keeper: serves;
    mallory/deep: nests directories deeper than the measure goes, to hide what it writes."""
    settings = settings_for(tmp_path_factory.mktemp("disk"))
    with running_site(settings, local_runtime, ("alice", "bob", "mallory")) as site:
        hog = VenvArtifact(make_venv(site.artifacts, "hogvenv000000001", "alice"),
                           make_source(site.artifacts, "alice", "hog"), ("python", "app.py"), 7860)  # fmt: skip
        keeper = VenvArtifact(make_venv(site.artifacts, "keepervenv000001", "bob"),
                              make_source(site.artifacts, "bob", "keeper"), ("python", "app.py"), 7860)  # fmt: skip
        seed_space(site.platform, "alice", "hog", hog, {"DISKHOG_AT_START": "many:600"})
        seed_space(site.platform, "bob", "keeper", keeper)
        deep = VenvArtifact(make_venv(site.artifacts, "deepvenv00000001", "mallory"),
                            make_source(site.artifacts, "mallory", "deep"), ("python", "app.py"), 7860)  # fmt: skip
        seed_space(site.platform, "mallory", "deep", deep, {"DISKHOG_AT_START": f"deep:{MAX_DEPTH + 10}"})
        site.client.app.state.reconciler.kick()  # type: ignore[attr-defined]
        yield site


def test_an_app_past_its_disk_quota_is_stopped_and_says_why(site: Site) -> None:
    state = site.wait_stage("alice/hog", {"RUNTIME_ERROR"})
    message = str(state["errorMessage"])
    assert message.startswith("The app wrote "), message
    assert message.endswith("more than the 2 MiB per space (SPACEPORT_SPACE_DISK_BYTES); it was stopped. "
                            "Write less, or ask an admin to raise the limit."), message
    assert site.wait_stage("bob/keeper", {"RUNNING"})["errorMessage"] is None
    (instance,) = site.instances("alice-hog")
    assert not (instance / "home" / "many").exists(), "what the stopped app wrote is freed"
    log = (instance / "app.log").read_text()
    assert "diskhog: many 600" in log and log.count("===== spaceport: starting") == 1, log
    site.client.app.state.reconciler.kick()  # type: ignore[attr-defined]
    site.wait_stage("bob/keeper", {"RUNNING"})
    assert site.runtime_json("alice/hog")["stage"] == "RUNTIME_ERROR"  # a failed instance, not a restart loop
    assert (instance / "app.log").read_text().count("===== spaceport: starting") == 1


def test_an_app_hiding_its_writes_in_deep_directories_is_stopped(site: Site) -> None:
    state = site.wait_stage("mallory/deep", {"RUNTIME_ERROR"})
    assert state["errorMessage"] == TOO_DEEP
    assert "levels deep" in TOO_DEEP and "(SPACEPORT_SPACE_DISK_BYTES)" in TOO_DEEP


def test_gc_removes_unused_artifacts_and_keeps_what_spaces_use(site: Site) -> None:
    site.wait_stage("bob/keeper", {"RUNNING"})
    ghost_source = make_source(site.artifacts, "ghost", "old", "ab" * 20)
    ghost_venv = make_venv(site.artifacts, "ghostvenv0000001", "ghost")
    dry = CliRunner().invoke(cli.app, ["gc", "--grace", "0", "--dry-run", "--data-dir", str(site.platform.settings.data_dir)])
    assert dry.exit_code == 0, dry.output
    assert f"would remove source {ghost_source}\n" in dry.output and f"would remove venv {ghost_venv}\n" in dry.output
    assert ghost_source.exists() and ghost_venv.exists()
    report = artifact_gc.collect(site.platform, grace=0)
    assert {c.ref for c in report.removed} == {str(ghost_source), str(ghost_venv)}, report
    assert report.freed_bytes > 0
    assert not ghost_source.exists() and not ghost_venv.exists() and not (site.artifacts / "sources" / "ghost").exists()
    for owner, name, key in (("alice", "hog", "hogvenv000000001"), ("bob", "keeper", "keepervenv000001")):
        assert (site.artifacts / "sources" / owner / name / SHA).is_dir() and (site.artifacts / "venvs" / key).is_dir()
    assert site.runtime_json("bob/keeper")["stage"] == "RUNNING"


def test_deleting_a_space_frees_its_sources_venv_and_instance(site: Site) -> None:
    site.wait_stage("alice/hog", {"RUNTIME_ERROR"})
    instances = site.instances("alice-hog")
    assert instances
    gone = [site.artifacts / "sources" / "alice" / "hog", site.artifacts / "venvs" / "hogvenv000000001", *instances]
    response = site.client.request("DELETE", "/api/repos/delete", json={"type": "space", "name": "hog"},
                                   headers={"authorization": f"Bearer {site.tokens['alice']}"})  # fmt: skip
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 60
    while any(p.exists() for p in gone) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in gone if p.exists()]
    assert (site.artifacts / "venvs" / "keepervenv000001").is_dir()
    assert (site.artifacts / "sources" / "bob" / "keeper" / SHA).is_dir()
    assert site.runtime_json("bob/keeper")["stage"] == "RUNNING"


# ----------------------------------------------------------------------------- builds in progress
def test_gc_leaves_an_owner_with_a_build_in_progress_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = Platform(settings_for(tmp_path))
    platform.migrate()
    artifacts = platform.settings.artifacts_dir
    with platform.tx() as session:
        accounts.create_user(session, "carol")
    seed_space(platform, "carol", "app", None, status="running")  # may reuse any venv of carol's
    unused = make_venv(artifacts, "carolvenv0000001", "carol")
    building = artifacts / "sources" / "carol" / "app" / SHA
    building.mkdir(parents=True)
    report = artifact_gc.collect(platform, grace=0)
    assert unused.is_dir() and building.is_dir() and not report.removed and report.kept == 1

    with platform.tx() as session:  # the build finished long ago (a failure: nothing recorded)
        for build in session.query(Build):
            build.status = "failed"
    looks = iter([set(), {"carol"}])  # ... but another one of carol's starts while the collection runs
    monkeypatch.setattr(artifact_gc, "busy_owners", lambda session: next(looks))
    report = artifact_gc.collect(platform, grace=0)
    assert unused.is_dir() and building.is_dir(), "renamed back for the build that started meanwhile"
    assert not report.removed and not list((artifacts / ".trash").iterdir())

    monkeypatch.undo()
    report = artifact_gc.collect(platform, grace=0)
    assert not unused.exists() and not building.exists() and len(report.removed) == 2
    platform.dispose()


def test_gc_grace_keeps_recent_artifacts(tmp_path: Path) -> None:
    platform = Platform(settings_for(tmp_path))
    platform.migrate()
    recent = make_venv(platform.settings.artifacts_dir, "recentvenv000001", "dave")
    assert not artifact_gc.collect(platform).removed and recent.is_dir()  # default grace: an hour
    old = time.time() - 2 * 3600
    os.utime(recent, (old, old))
    assert [c.ref for c in artifact_gc.collect(platform).removed] == [str(recent)]
    platform.dispose()


# ----------------------------------------------------------------------------- docker
@pytest.mark.docker
def test_docker_app_past_its_disk_quota_is_stopped_and_its_images_collected(tmp_path: Path, docker_host: str) -> None:
    import docker

    from controller.runtimes.docker import DockerRuntime, site_id
    from tests.runtimes.conftest import TEST_IMAGE, _build_test_image

    _build_test_image(docker_host)
    settings = settings_for(tmp_path, runtime="docker", docker_host=docker_host)
    site_label = f"spaceport.site={site_id(settings.data_dir)}"
    repo = f"spaceport/disktest-{site_id(settings.data_dir)}"  # tags of the test image: removing one only untags
    client = docker.DockerClient(base_url=docker_host)
    for tag in ("current", "older"):
        client.images.get(TEST_IMAGE).tag(repo, tag)

    def docker_runtime(s: Settings) -> Runtime:
        return DockerRuntime(docker_host, stop_timeout=5, site=site_id(s.data_dir))

    try:
        with running_site(settings, docker_runtime, ("erin",)) as site:
            older = seed_space(site.platform, "erin", "hog", ImageArtifact(f"{repo}:older", 7860))
            with site.platform.tx() as session:  # an earlier build of the space: its image is unused now
                session.get(Build, older).commit_sha = "0" * 40  # type: ignore[union-attr]
                space = session.query(Space).one()
                build = Build(space_id=space.id, commit_sha=SHA, status="succeeded",
                              artifact=artifact_to_dict(ImageArtifact(f"{repo}:current", 7860)))  # fmt: skip
                session.add(build)
                session.flush()
                space.target_build_id = build.id
            site.client.app.state.reconciler.kick()  # type: ignore[attr-defined]
            site.wait_stage("erin/hog", {"RUNNING"})
            (container,) = client.containers.list(filters={"label": site_label})
            done = container.exec_run(["sh", "-c", "head -c 3145728 /dev/urandom > /tmp/blob"])
            assert done.exit_code == 0, done.output
            state = site.wait_stage("erin/hog", {"RUNTIME_ERROR"})
            assert "more than the 2 MiB per space (SPACEPORT_SPACE_DISK_BYTES)" in str(state["errorMessage"]), state
            container.reload()
            assert container.status == "exited"

            report = artifact_gc.collect(site.platform, grace=0)
            assert [c.ref for c in report.removed] == [f"{repo}:older"]
            assert client.images.get(f"{repo}:current")  # the current build's, and its container's

            deleted = site.client.request("DELETE", "/api/repos/delete", json={"type": "space", "name": "hog"},
                                          headers={"authorization": f"Bearer {site.tokens['erin']}"})  # fmt: skip
            assert deleted.status_code == 200, deleted.text
            deadline = time.monotonic() + 60
            # sparse: no inspect per container, which raises NotFound for one removed between list and inspect
            while client.containers.list(all=True, sparse=True, filters={"label": site_label}) and time.monotonic() < deadline:
                time.sleep(0.1)
            report = artifact_gc.collect(site.platform, grace=0)  # the deleted space's image, once unused
            assert [c.ref for c in report.removed] == [f"{repo}:current"], report
            assert not client.images.list(name=repo)
            assert client.images.get(TEST_IMAGE)
    finally:
        for container in client.containers.list(all=True, sparse=True, filters={"label": site_label}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        for tag in ("current", "older"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(f"{repo}:{tag}")
        client.close()
