"""Faults in the production topology: PostgreSQL, a Redis broker, `spaceport serve --no-worker` and a
separate `spaceport worker --beat`, each killed or restarted at the worst moment.

The module runs its own PostgreSQL cluster and Redis server (restarting the shared test services would
disturb tests running in parallel). Builds are held mid-install by a local PEP 517 backend that waits
for a gate file, so "mid-build" is a fact, not a guess. Afterwards every space must be in a correct
stage, no build lost silently, exactly one instance per space running (counted with /proc), routes right.
(A killed app is covered by tests/controller/test_run_live.py.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from controller.config import Settings
from controller.db.models import utcnow
from controller.services.platform import Platform
from controller.services.sleep import sweep
from tests.support.gitrepo import commit_file, make_repo, push, remote
from tests.support.server import ROOT, LiveServer, free_port, server_env
from tests.support.spaces import wait_stage
from tests.support.tiers import missing

pytestmark = pytest.mark.slow
FINAL = {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR"}
# The gated build backend below signals through files in the test's work dir, which the build sandbox (rightly)
# hides; these tests are about killing controller, worker, Redis and PostgreSQL, so they run unsandboxed.
UNSANDBOXED_GATE = {"SPACEPORT_SANDBOX": "none", "SPACEPORT_ALLOW_UNSANDBOXED": "true"}

BACKEND = '''
import base64, hashlib, os, pathlib, time, zipfile
GATE = {gate!r}

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    pathlib.Path(GATE + ".started").touch()
    deadline = time.time() + 300
    while not os.path.exists(GATE) and time.time() < deadline:
        time.sleep(0.1)
    files = {{"slowpkg/__init__.py": b"",
             "slowpkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\\nName: slowpkg\\nVersion: 0.1\\n",
             "slowpkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\\nGenerator: gate\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{{path}},sha256={{digest}},{{len(data)}}")
    record.append("slowpkg-0.1.dist-info/RECORD,,")
    name = "slowpkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr("slowpkg-0.1.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
'''
APP = '''import os, time
from http.server import BaseHTTPRequestHandler, HTTPServer
time.sleep(3)  # a slow start: leaves room to kill the controller mid-wake
BODY = open("version.txt", "rb").read()
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
HTTPServer((os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
'''


def app_files(version: str, gate: Path | None) -> dict[str, str]:
    files = {"README.md": "---\nsdk: gradio\nstartup_duration_timeout: 2m\n---\n", "app.py": APP, "version.txt": version}
    if gate is not None:  # a fresh environment whose install waits for the gate
        files["requirements.txt"] = f"# {uuid.uuid4().hex}\n./slowpkg\n"
        files["slowpkg/pyproject.toml"] = ('[build-system]\nrequires = []\nbuild-backend = "gate_backend"\nbackend-path = ["."]\n'
                                           '[project]\nname = "slowpkg"\nversion = "0.1"\n')
        files["slowpkg/gate_backend.py"] = BACKEND.format(gate=str(gate))
    return files


# ----------------------------------------------------------------------------- own services

@dataclass
class Postgres:
    root: Path
    bindir: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/spaceport"

    def pg_ctl(self, *args: str) -> None:
        data = self.root / "data"
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        cmd = f"{self.bindir}/pg_ctl -D {data} -l {self.root}/log -w -o '{opts}' {' '.join(args)}"
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", cmd], check=True, capture_output=True)

    def init(self) -> None:
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", f"{self.bindir}/initdb -D {self.root / 'data'} -A trust -U postgres"],
                       check=True, capture_output=True)
        self.pg_ctl("start")
        engine = create_engine(self.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE spaceport"))
        engine.dispose()


@dataclass
class Redis:
    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Worker:
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        cmd = [sys.executable, "-m", "controller.cli", "worker", "--beat", "--concurrency", "2"]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (celery's pool children too), then reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def controller_only(data_dir: Path, port: int, env: dict[str, str]) -> LiveServer:
    """`spaceport serve --no-worker`: the production controller; builds run in a separate worker."""
    return LiveServer(data_dir=data_dir, port=port, env=env, serve_args=("--no-worker",))


@dataclass
class Site:
    server: LiveServer
    worker: Worker
    pg: Postgres
    redis: Redis
    engine: Engine
    token: str
    work: Path

    def restart_controller(self) -> None:
        self.server = controller_only(self.server.data_dir, self.server.port, self.server.env)
        self.server.start()

    def build_rows(self, name: str) -> list[tuple[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT b.status, b.attempts FROM builds b JOIN spaces s ON s.id = b.space_id "
                                     "WHERE s.name = :n ORDER BY b.id"), {"n": name})
            return [(str(r[0]), int(r[1])) for r in rows]

    def host_get(self, name: str) -> httpx.Response:
        return httpx.get(f"{self.server.url}/", headers={"Host": f"alice-{name}.localhost:{self.server.port}"}, timeout=60)

    def push(self, name: str, files: dict[str, str]) -> Path:
        repo = make_repo(self.work / f"{name}-{uuid.uuid4().hex[:6]}", files)
        push(repo, remote(self.server.url, "alice", name, "alice", self.token))
        return repo


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    pg_bin = os.environ.get("SPACEPORT_TEST_PG_BIN", "")
    if not pg_bin or shutil.which("redis-server") is None or os.geteuid() != 0:
        missing("faults tests need root, PostgreSQL binaries (SPACEPORT_TEST_PG_BIN) and redis-server")
    work = tmp_path_factory.mktemp("faults")
    pg_root = Path(tempfile.mkdtemp(prefix="spaceport-faults-pg-", dir="/var/tmp"))
    pg_root.chmod(0o755)
    shutil.chown(pg_root, "postgres", "postgres")
    pg, redis = Postgres(pg_root, Path(pg_bin)), Redis(work)
    pg.init()
    redis.start()
    port = free_port()
    env = server_env(work / "data", SPACEPORT_PUBLIC_URL=f"http://localhost:{port}", SPACEPORT_DATABASE_URL=pg.url,
                     SPACEPORT_BROKER_URL=redis.url, SPACEPORT_BUILD_STALE_AFTER="6", SPACEPORT_RECOVER_INTERVAL="2",
                     **UNSANDBOXED_GATE)
    server = controller_only(work / "data", port, env)
    server.start()
    worker = Worker(env, work / "worker.log").start()
    engine = create_engine(pg.url, pool_pre_ping=True)
    s = Site(server, worker, pg, redis, engine, server.create_user("alice"), work)
    try:
        yield s
    finally:
        for gate in work.glob("gate-*.started"):
            Path(str(gate).removesuffix(".started")).touch()  # let orphaned build steps finish and exit
        s.worker.kill(signal.SIGTERM)
        s.server.close()
        engine.dispose()
        redis.stop()
        pg.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(pg_root, ignore_errors=True)


def wait_for(predicate: object, what: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.1)


def app_sessions(space_id: str) -> set[int]:
    """Sessions of live processes running this space's app (each instance runs in its own session)."""
    marker = f"SPACE_ID={space_id}".encode()
    sessions = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                sessions.add(os.getsid(int(entry.name)))
        except OSError:
            continue
    return sessions


def assert_settled(site: Site, name: str, version: str) -> None:
    """Served right (a visit wakes it if the sweep put it to sleep), RUNNING, exactly one instance, and every
    build accounted for (none stuck)."""
    state = wait_stage(site.server, f"alice/{name}", FINAL | {"SLEEPING"}, timeout=180)
    if state["stage"] == "SLEEPING":
        site.host_get(name)  # the activator holds this request while it wakes the app
        state = wait_stage(site.server, f"alice/{name}", FINAL, timeout=180)
    assert state["stage"] == "RUNNING", state
    response = site.host_get(name)
    assert response.status_code == 200 and response.text == version, (response.status_code, response.text[:200])
    dirs = sorted(d.name for d in (site.server.data_dir / "runtime" / "instances").glob(f"sp-alice-{name}-*"))
    wait_for(lambda: len(app_sessions(f"alice/{name}")) == 1,
             lambda: f"one instance of alice/{name}: sessions {app_sessions(f'alice/{name}')}, instance dirs {dirs}",
             timeout=30)
    assert all(status in ("succeeded", "cancelled") for status, _ in site.build_rows(name)), site.build_rows(name)


def started(gate: Path) -> bool:
    return Path(f"{gate}.started").exists()


# ----------------------------------------------------------------------------- the faults

def test_controller_killed_mid_build_then_restarted_deploys_it(site: Site) -> None:
    gate = site.work / "gate-controller"
    site.push("cbuild", app_files("cbuild-v1", gate))
    wait_for(lambda: started(gate), "the build to reach its install step")
    site.server.kill_controller_only()
    gate.touch()
    wait_for(lambda: site.build_rows("cbuild") == [("succeeded", 1)], "the worker to finish the build alone")
    site.restart_controller()
    assert_settled(site, "cbuild", "cbuild-v1")


def test_worker_killed_mid_build_is_retried_after_its_heartbeat_goes_stale(site: Site) -> None:
    gate = site.work / "gate-worker"
    site.push("wbuild", app_files("wbuild-v1", gate))
    wait_for(lambda: started(gate), "the build to reach its install step")
    assert site.build_rows("wbuild") == [("running", 1)]
    site.worker.kill()
    gate.touch()  # the killed worker's orphaned install may finish: it must not count
    site.worker = Worker(site.worker.env, site.worker.log).start()
    wait_for(lambda: site.build_rows("wbuild") == [("succeeded", 2)], "spaceport.recover to rerun the lost build", timeout=180)
    assert_settled(site, "wbuild", "wbuild-v1")
    logs = httpx.get(f"{site.server.url}/api/spaces/alice/wbuild/logs/build?follow=false", timeout=30).text
    assert "Build succeeded" in logs


def test_controller_killed_mid_wake(site: Site) -> None:
    site.push("waker", app_files("waker-v1", None))
    assert_settled(site, "waker", "waker-v1")
    platform = Platform(Settings(data_dir=site.server.data_dir, database_url=site.pg.url))
    try:
        sweep(platform, now=utcnow() + timedelta(hours=49))
        sweep(platform, now=utcnow() + timedelta(hours=51))
    finally:
        platform.dispose()
    wait_stage(site.server, "alice/waker", {"SLEEPING"})
    wait_for(lambda: not app_sessions("alice/waker"), "the deep-slept app to stop", timeout=30)
    visit = threading.Thread(target=lambda: _ignore_errors(lambda: site.host_get("waker")), daemon=True)
    visit.start()
    wait_for(lambda: bool(app_sessions("alice/waker")), "the wake to start the app", timeout=60)
    site.server.kill_controller_only()  # the app is still in its 3 s start-up
    visit.join(timeout=60)
    site.restart_controller()
    response = site.host_get("waker")  # wakes it again if the restarted controller put it back to sleep
    assert response.status_code == 200 and response.text == "waker-v1"
    assert_settled(site, "waker", "waker-v1")


def _ignore_errors(call: object) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call()  # type: ignore[operator]


def test_redis_restart_while_running(site: Site) -> None:
    repo = site.push("redisapp", app_files("redis-v1", None))
    assert_settled(site, "redisapp", "redis-v1")
    site.redis.stop()
    assert site.host_get("redisapp").text == "redis-v1"  # apps keep being served without the broker
    assert httpx.get(f"{site.server.url}/api/spaces/alice/redisapp/runtime", timeout=30).json()["stage"] == "RUNNING"
    site.redis.start()
    commit_file(repo, "version.txt", "redis-v2")
    push(repo, remote(site.server.url, "alice", "redisapp", "alice", site.token))
    wait_for(lambda: site.host_get("redisapp").text == "redis-v2", "the push after the restart to deploy", timeout=180)
    assert_settled(site, "redisapp", "redis-v2")


def test_postgres_restart_while_running(site: Site) -> None:
    repo = site.push("pgapp", app_files("pg-v1", None))
    assert_settled(site, "pgapp", "pg-v1")
    site.pg.pg_ctl("stop", "-m", "fast")
    try:
        for _ in range(5):
            response = site.host_get("pgapp")
            assert response.status_code == 200 and response.text == "pg-v1"  # served from the route table
    finally:
        site.pg.pg_ctl("start")

    def api_back() -> bool:
        try:
            return httpx.get(f"{site.server.url}/api/spaces/alice/pgapp/runtime", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(api_back, "the API to recover after PostgreSQL returns", timeout=60)
    commit_file(repo, "version.txt", "pg-v2")
    push(repo, remote(site.server.url, "alice", "pgapp", "alice", site.token))
    wait_for(lambda: site.host_get("pgapp").text == "pg-v2", "the push after the restart to deploy", timeout=180)
    assert_settled(site, "pgapp", "pg-v2")


def test_afterwards_every_space_is_settled(site: Site) -> None:
    versions = {"cbuild": "cbuild-v1", "wbuild": "wbuild-v1", "waker": "waker-v1", "redisapp": "redis-v2", "pgapp": "pg-v2"}
    for name, version in versions.items():
        assert_settled(site, name, version)
    with site.engine.connect() as conn:
        stuck = conn.execute(text("SELECT count(*) FROM builds WHERE status IN ('queued', 'running')")).scalar_one()
    assert stuck == 0
