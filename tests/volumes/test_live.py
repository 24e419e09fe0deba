"""Persistent storage and volumes on real runtimes (issue 16): apps pushed with git to a live server, on the
bubblewrap-sandboxed local runtime and on the docker runtime (the real engine), one server per runtime for the
whole module.

* storage requested over the HTTP API (huggingface_hub 2.4 has no request_space_storage): the app writes
  /data, and the file is still there after a restart (HfApi.restart_space), a rebuild (a new push) and a deep
  sleep and wake; after the controller is killed and started again the app it adopted still runs with it;
* a tier's size is enforced: an app that writes more than its tier holds to /data is stopped (RUNTIME_ERROR
  saying so) and its files are kept; a larger tier runs it again;
* deleting a space that has storage is refused until its storage was deleted (the confirmation); deleting the
  storage removes the directory without following the links the app left in it;
* a volume of type space set with HfApi.set_space_volumes: the other space's files are readable at its path
  and nothing there can be written;
* attacks by an ordinary account: mounting another owner's private space is refused; a link the app plants in
  /data towards another space's storage directory (its real host path) leads nowhere, that path is not visible,
  and the host-side hand-over of /data (give_storage) never follows a link out of the tree; another owner can
  neither delete, grow nor see the storage of a space, nor delete the space.
The rules and the service alone are tests/volumes/test_rules.py, collection tests/volumes/test_storage_gc.py.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from huggingface_hub import HfApi, Volume
from huggingface_hub.errors import HfHubHTTPError
from sqlalchemy import select

from controller.config import Settings
from controller.db.models import Build, PlatformSetting, Space, utcnow
from controller.runtimes.sandbox import sandbox_status
from controller.services.artifact_gc import PENDING_IMAGES
from controller.services.platform import Platform
from controller.services.sleep import sweep
from controller.services.volumes import storage_dir
from tests.support.gitrepo import commit_file, push, remote
from tests.support.images import ensure_base_images
from tests.support.server import LiveServer, make_server
from tests.support.spaces import push_fixture, runtime, wait_stage
from tests.support.tiers import missing

# One tiny HTTP app (no gradio import) that does to its filesystem what the test asks and says what happened.
APP = '''\
import json, os, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BOOT = uuid.uuid4().hex
VERSION = open("VERSION").read().strip()


def run(q):
    op, path = q.get("op", "info"), os.path.expanduser(q.get("path", "/"))
    if op == "info":
        return {"boot": BOOT, "version": VERSION, "uid": os.getuid()}
    if op == "write":
        with open(path, "w") as f:
            f.write(q.get("text", ""))
        return "written"
    if op == "read":
        with open(path) as f:
            return f.read()
    if op == "ls":
        return sorted(os.listdir(path))
    if op == "symlink":
        os.symlink(q["target"], path)
        return "linked"
    if op == "mkdir":
        os.makedirs(path)
        return "made"
    if op == "fill":
        with open(path, "wb") as f:
            for _ in range(int(q["mb"])):
                f.write(os.urandom(1 << 20))
            f.flush()
            os.fsync(f.fileno())
        return "filled"
    if op == "rm":
        os.remove(path)
        return "removed"
    raise ValueError(op)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        try:
            body = {"ok": True, "result": run(q)}
        except Exception as exc:
            body = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


ThreadingHTTPServer((os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), int(os.environ["PORT"])), Handler).serve_forever()
'''
LOCAL_APP = {"README.md": "---\ntitle: Store\nsdk: gradio\n---\n", "app.py": APP, "VERSION": "1\n"}
DOCKER_APP = {
    "README.md": "---\ntitle: Store\nsdk: docker\napp_port: 8080\n---\n",
    "Dockerfile": "FROM python:3.11-slim\nRUN useradd -m -u 1000 user\nUSER user\nWORKDIR /home/user/app\n"
                  "COPY --chown=user . /home/user/app\nEXPOSE 8080\nCMD [\"python\", \"app.py\"]\n",
    "app.py": APP, "VERSION": "1\n",
}
WEIGHTS = {"README.md": "---\ntitle: Weights\nsdk: static\n---\n", "index.html": "<p>weights</p>\n",
           "weights.txt": "the weights of alice\n"}
SETTLED = {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR"}
STARTUP = 120  # seconds a server may take to answer (the suite's other workers load this 2-core machine)
SMALL_MB = 4  # the small tier of these servers (SPACEPORT_STORAGE_SMALL_BYTES): the size test fills it quickly


@dataclass
class Site:
    server: LiveServer
    kind: str  # local | docker | unsandboxed
    tokens: dict[str, str]
    tmp: Path

    def ask(self, space: str, timeout: float = 120, **query: str) -> dict[str, Any]:
        slug = space.replace("/", "-")
        response = httpx.get(f"{self.server.url}/", params=query, timeout=timeout,
                             headers={"Host": f"{slug}.localhost:{self.server.port}"})
        assert response.status_code == 200, response.text[:500]
        return dict(response.json())

    def until(self, space: str, check: Any, timeout: float = 180, **query: str) -> dict[str, Any]:
        """Ask again until check(answer) holds (a new instance replaces the old one meanwhile)."""
        deadline = time.monotonic() + timeout
        answer: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                answer = self.ask(space, timeout=30, **query)
            except (httpx.HTTPError, AssertionError) as exc:
                answer = {"error": str(exc)}
            if check(answer):
                return answer
            time.sleep(0.3)
        raise AssertionError(f"{space}: {query} never satisfied the check: {answer}\n{self.server.logs()[-3000:]}")

    def api(self, method: str, path: str, user: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}{path}", timeout=30,
                             headers={"authorization": f"Bearer {self.tokens[user]}"}, **kw)

    def hf(self, user: str) -> HfApi:
        return HfApi(endpoint=self.server.url, token=self.tokens[user])

    def push_app(self, owner: str, name: str) -> Path:
        files = DOCKER_APP if self.kind == "docker" else LOCAL_APP
        repo = push_fixture(self.server, self.tmp, files, owner, name, self.tokens[owner])
        state = wait_stage(self.server, f"{owner}/{name}", SETTLED, timeout=400)
        assert state["stage"] == "RUNNING", state
        return repo

    def data(self, name: str) -> str:
        """Where the app's persistent storage is: /data, or ~/data when nothing is sandboxed."""
        return f"~/data/{name}" if self.kind == "unsandboxed" else f"/data/{name}"

    def request_storage(self, space: str, owner: str) -> None:
        response = self.api("POST", f"/api/spaces/{space}/storage", owner, json={"tier": "small"})
        assert response.status_code == 200, response.text
        self.until(space, lambda a: a.get("ok") is True, op="write", path=self.data(".probe"), text="x")

    def store(self, owner: str = "alice", name: str = "store") -> str:
        """OWNER/NAME running with storage (pushed and given it here unless an earlier test did)."""
        space = f"{owner}/{name}"
        if not (self.tmp / f"{owner}-{name}").exists():
            self.push_app(owner, name)
        if runtime(self.server, space, self.tokens[owner]).get("storage") is None:
            self.request_storage(space, owner)
        return space

    def storage_path(self, space: str) -> Path:
        settings = Settings(data_dir=self.server.data_dir)
        platform = Platform(settings)
        try:
            with platform.sessions() as session:
                key = next(s.storage_key for s in session.query(Space).all() if s.space_id == space)
                assert key, f"{space} has no storage key"
                return storage_dir(settings, key)
        finally:
            platform.dispose()


def _site(kind: str, tmp: Path, docker_host: str | None) -> LiveServer:
    extra = {"SPACEPORT_RUNTIME": "docker", "SPACEPORT_DOCKER_HOST": docker_host or ""} if kind == "docker" else {}
    extra |= {"SPACEPORT_STORAGE_SMALL_BYTES": str(SMALL_MB * 10**6), "SPACEPORT_SPACE_DISK_CHECK_INTERVAL": "1"}
    if kind == "unsandboxed":
        extra["SPACEPORT_SANDBOX"] = "none"
    if kind == "local":
        status = sandbox_status()
        if not status.available:
            missing(f"the bubblewrap sandbox is not available here: {status.reason}")
        extra["SPACEPORT_SANDBOX"] = "bwrap"
    return make_server(tmp, **extra)


@pytest.fixture(scope="module", params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    docker_host = None
    if request.param == "docker":
        docker_host = request.getfixturevalue("docker_host")
        ensure_base_images(docker_host)
    tmp = tmp_path_factory.mktemp(f"volumes-{request.param}")
    server = _site(request.param, tmp, docker_host)
    try:
        server.start(timeout=STARTUP)
        tokens = {name: server.create_user(name) for name in ("alice", "bob")}
        yield Site(server, request.param, tokens, tmp)
    finally:
        server.close()
        if docker_host:
            _remove_images(server, docker_host)


def _remove_images(server: LiveServer, docker_host: str) -> None:
    """The images this module's server built (the engine is shared by the whole suite)."""
    platform = Platform(Settings(data_dir=server.data_dir))
    try:
        with platform.sessions() as session:  # the current spaces' builds, and a deleted space's pending images
            refs = {str(a["image"]) for a in session.scalars(select(Build.artifact)) if isinstance(a, dict) and a.get("image")}
            pending = session.get(PlatformSetting, PENDING_IMAGES)
            refs |= {str(ref) for ref, _owner in (pending.value if pending is not None else [])}
    finally:
        platform.dispose()
    client = docker.DockerClient(base_url=docker_host)
    try:
        for ref in refs:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.images.remove(ref)
    finally:
        client.close()


def _deep_sleep(server: LiveServer, space: str) -> None:
    platform = Platform(Settings(data_dir=server.data_dir))
    try:
        sweep(platform, now=utcnow() + timedelta(hours=49))
        sweep(platform, now=utcnow() + timedelta(hours=51))
    finally:
        platform.dispose()
    wait_stage(server, space, {"SLEEPING"}, timeout=60)


def test_data_survives_restart_rebuild_and_sleep(site: Site) -> None:
    repo = site.push_app("alice", "store")
    before = site.ask("alice/store", op="write", path="/data/note.txt", text="early")
    assert before["ok"] is False and "No such file or directory" in before["error"]  # no /data before storage
    site.request_storage("alice/store", "alice")
    assert site.ask("alice/store", op="write", path="/data/note.txt", text="kept")["ok"] is True
    host = site.storage_path("alice/store")
    assert (host / "note.txt").read_text() == "kept"
    uid = site.ask("alice/store", op="info")["result"]["uid"]
    assert host.stat().st_uid == uid and uid != 0  # /data belongs to the app's own unprivileged user

    boot = site.ask("alice/store", op="info")["result"]["boot"]
    site.hf("alice").restart_space("alice/store")
    site.until("alice/store", lambda a: a.get("ok") and a["result"]["boot"] != boot, op="info")
    assert site.ask("alice/store", op="read", path="/data/note.txt") == {"ok": True, "result": "kept"}

    commit_file(repo, "VERSION", "2\n", "rebuild")
    push(repo, remote(site.server.url, "alice", "store", "alice", site.tokens["alice"]))
    site.until("alice/store", lambda a: a.get("ok") and a["result"]["version"] == "2", timeout=400, op="info")
    assert site.ask("alice/store", op="read", path="/data/note.txt") == {"ok": True, "result": "kept"}

    boot = site.ask("alice/store", op="info")["result"]["boot"]
    _deep_sleep(site.server, "alice/store")
    woken = site.ask("alice/store", op="info")  # the visit wakes it (an API client is held until it is ready)
    assert woken["ok"] and woken["result"]["boot"] != boot, woken
    assert site.ask("alice/store", op="read", path="/data/note.txt") == {"ok": True, "result": "kept"}


def test_the_app_and_its_data_survive_a_controller_restart(site: Site) -> None:
    """The controller is killed (SIGKILL, as a crash would) and started again: it adopts the app that kept
    running (the same process: the same boot id), whose /data kept its contents."""
    space = site.store()
    assert site.ask(space, op="write", path="/data/restart.txt", text="before")["ok"] is True
    boot = site.ask(space, op="info")["result"]["boot"]
    site.server.kill()
    site.server.start(timeout=STARTUP)
    read = site.until(space, lambda a: a.get("ok") is True, timeout=60, op="read", path="/data/restart.txt")
    assert read["result"] == "before"
    assert site.ask(space, op="info")["result"]["boot"] == boot
    assert wait_stage(site.server, space, {"RUNNING"}, timeout=30, token=site.tokens["alice"])["stage"] == "RUNNING"
    assert site.ask(space, op="write", path="/data/restart.txt", text="after")["ok"] is True
    assert (site.storage_path(space) / "restart.txt").read_text() == "after"


def test_a_space_volume_is_readable_and_not_writable(site: Site) -> None:
    push_fixture(site.server, site.tmp, WEIGHTS, "alice", "weights", site.tokens["alice"])
    wait_stage(site.server, "alice/weights", SETTLED, timeout=120)
    if not (site.tmp / "alice-store").exists():
        site.push_app("alice", "store")
    site.hf("alice").set_space_volumes("alice/store", [Volume(type="space", source="alice/weights", mount_path="/models")])
    read = site.until("alice/store", lambda a: a.get("ok") is True, op="read", path="/models/weights.txt")
    assert read["result"] == "the weights of alice\n"
    for op, path in (("write", "/models/weights.txt"), ("write", "/models/new.txt"), ("mkdir", "/models/sub")):
        answer = site.ask("alice/store", op=op, path=path, text="overwritten")
        assert answer["ok"] is False and "Read-only file system" in answer["error"], answer
    assert site.ask("alice/store", op="read", path="/models/weights.txt")["result"] == "the weights of alice\n"
    exports = site.server.data_dir / "volumes" / "exports" / "alice" / "weights"
    assert [p.read_text() for p in exports.glob("*/weights.txt")] == ["the weights of alice\n"]


def test_another_owners_private_space_cannot_be_mounted(site: Site) -> None:
    created = site.api("POST", "/api/repos/create", "bob", json={"type": "space", "name": "secret", "organization": "bob",
                                                                "sdk": "static", "private": True})
    assert created.status_code == 200, created.text
    push_fixture(site.server, site.tmp, {**WEIGHTS, "weights.txt": "bob's secret\n"}, "bob", "secret", site.tokens["bob"])
    with pytest.raises(HfHubHTTPError) as refused:
        site.hf("alice").set_space_volumes("alice/store", [Volume(type="space", source="bob/secret", mount_path="/s")])
    assert refused.value.response.status_code == 400
    assert "private and not alice's" in refused.value.response.text
    assert not (site.server.data_dir / "volumes" / "exports" / "bob").exists()  # nothing of it was ever exported


def test_links_in_data_do_not_reach_another_spaces_storage(site: Site) -> None:
    site.push_app("bob", "vault")
    site.request_storage("bob/vault", "bob")
    assert site.ask("bob/vault", op="write", path="/data/bob.txt", text="bob's data")["ok"] is True
    bob_dir = site.storage_path("bob/vault")
    if not (site.tmp / "alice-store").exists():
        site.push_app("alice", "store")
        site.request_storage("alice/store", "alice")
    alice_dir = site.storage_path("alice/store")
    canary = site.tmp / "canary"
    canary.write_text("root's")
    os.chown(canary, 0, 0)
    for name, target in (("escape", bob_dir), ("canary", canary)):
        linked = site.ask("alice/store", op="symlink", path=f"/data/{name}", target=str(target))
        assert linked["ok"] is True, linked
    for path in ("/data/escape/bob.txt", f"{bob_dir}/bob.txt", "/data/canary"):
        answer = site.ask("alice/store", op="read", path=path)
        assert answer["ok"] is False and "No such file or directory" in answer["error"], (path, answer)
    for path in (str(bob_dir.parent), str(site.server.data_dir / "volumes")):  # no storage dir, no export
        answer = site.ask("alice/store", op="ls", path=path)
        assert answer["ok"] is False and "No such file or directory" in answer["error"], (path, answer)
    listing = site.ask("alice/store", op="ls", path="/data")["result"]
    assert "bob.txt" not in listing and "escape" in listing
    # The host side: as if another uid had owned alice's storage, the next start hands the tree over to the
    # app's uid without following the links in it: bob's directory and the root-owned canary keep their owner.
    bob_uid = bob_dir.stat().st_uid
    os.chown(alice_dir, 0, 0)
    boot = site.ask("alice/store", op="info")["result"]["boot"]
    site.hf("alice").restart_space("alice/store")
    site.until("alice/store", lambda a: a.get("ok") and a["result"]["boot"] != boot, op="info")
    assert alice_dir.stat().st_uid == site.ask("alice/store", op="info")["result"]["uid"]
    assert os.readlink(alice_dir / "escape") == str(bob_dir)
    assert os.lstat(alice_dir / "escape").st_uid == alice_dir.stat().st_uid  # the link itself was handed over
    assert canary.stat().st_uid == 0 and canary.read_text() == "root's"
    assert bob_dir.stat().st_uid == bob_uid and (bob_dir / "bob.txt").stat().st_uid == bob_uid
    assert (bob_dir / "bob.txt").read_text() == "bob's data"



def test_storage_beyond_its_tier_stops_the_app_and_keeps_its_files(site: Site) -> None:
    """The small tier of these servers holds SMALL_MB MB: an app that writes more to /data is stopped by the
    disk watch with a message naming its tier, its files stay; a larger tier starts it again with them."""
    space = site.store()
    assert runtime(site.server, space, site.tokens["alice"])["storage"] == "small"
    filled = site.ask(space, op="fill", path="/data/big.bin", mb=str(SMALL_MB + 2))
    assert filled == {"ok": True, "result": "filled"}, filled
    stopped = wait_stage(site.server, space, {"RUNTIME_ERROR"}, timeout=60, token=site.tokens["alice"])
    message = str(stopped["errorMessage"])
    assert "persistent storage (/data)" in message and "small tier" in message, stopped
    host = site.storage_path(space)
    assert (host / "big.bin").stat().st_size == (SMALL_MB + 2) << 20  # kept
    grown = site.api("POST", f"/api/spaces/{space}/storage", "alice", json={"tier": "medium"})
    assert grown.status_code == 200 and grown.json()["storage"] == "medium", grown.text
    read = site.until(space, lambda a: a.get("ok") is True, op="ls", path="/data")
    assert "big.bin" in read["result"]
    assert site.ask(space, op="rm", path="/data/big.bin")["ok"] is True


def test_deleting_a_space_needs_its_storage_deleted_first_and_only_by_its_owner(site: Site) -> None:
    space = site.store()
    vault = site.store("bob", "vault")
    bob_dir = site.storage_path(vault)
    assert site.ask(vault, op="write", path="/data/bob.txt", text="bob's data")["ok"] is True
    host = site.storage_path(space)
    assert site.ask(space, op="write", path="/data/mine.txt", text="alice's")["ok"] is True
    assert site.ask(space, op="symlink", path="/data/to-bob", target=str(bob_dir))["ok"] is True
    # bob, an ordinary account: cannot delete, grow or shrink alice's storage, nor delete her space
    for method, body in (("DELETE", None), ("POST", {"tier": "large"}), ("POST", {"tier": "small"})):
        answer = site.api(method, f"/api/spaces/{space}/storage", "bob", json=body)
        assert answer.status_code in (403, 404), (method, body, answer.status_code, answer.text)
    with pytest.raises(HfHubHTTPError) as refused:
        site.hf("bob").delete_repo(space, repo_type="space")
    assert refused.value.response.status_code in (403, 404)
    seen = site.api("GET", f"/api/spaces/{space}/runtime", "bob")
    assert seen.status_code == 200 and host.name not in seen.text and str(host) not in seen.text
    assert (host / "mine.txt").read_text() == "alice's"
    # alice: deleting the space is refused until she deleted its storage (the confirmation), which she then does
    with pytest.raises(HfHubHTTPError) as refused:
        site.hf("alice").delete_repo(space, repo_type="space")
    assert refused.value.response.status_code == 409 and "delete_space_storage" in refused.value.response.text
    assert site.ask(space, op="read", path="/data/mine.txt") == {"ok": True, "result": "alice's"}
    deleted = site.api("DELETE", f"/api/spaces/{space}/storage", "alice")
    assert deleted.status_code == 200 and deleted.json()["storage"] is None, deleted.text
    deadline = time.monotonic() + 10
    while host.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not host.exists()
    assert (bob_dir / "bob.txt").read_text() == "bob's data"  # the link alice left was not followed
    assert site.ask(vault, op="read", path="/data/bob.txt") == {"ok": True, "result": "bob's data"}
    site.hf("alice").delete_repo(space, repo_type="space")
    gone = site.api("GET", f"/api/spaces/{space}/runtime", "alice")
    assert gone.status_code == 404, gone.text
