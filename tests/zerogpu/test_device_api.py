"""The ZeroGPU device API over HTTP, in the `spaces` package's request shapes (spaces/zero/api.py 0.51.x),
on a real SQLite database, with real processes for /allow's pid check and the kill at the deadline.

Attacker tests: a wrong capability, another space's capability, another instance's allowToken, a forged
or another site's X-IP-Token, huge/negative/garbage durations, a pid that is not the instance's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from controller.api import zerogpu as api
from controller.config import Settings
from controller.db.models import Build, Instance, Space, ZeroGpuLease
from controller.domain import zerogpu as dz
from controller.runtimes import netns, procs
from controller.services import zerogpu as zs
from controller.services.accounts import create_token, create_user
from controller.services.platform import Platform

SITE = "http://spaceport.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    platform: Platform
    client: TestClient
    zero: zs.ZeroGpu
    clock: Clock
    caps: dict[str, str]  # space -> capability
    users: dict[str, int]
    tokens: dict[str, str]
    workers: dict[str, int]  # space -> pid of the process standing in for its instance's GPU worker

    def url(self, space: str, call: str) -> str:
        return f"/zerogpu/{self.caps[space]}/{call}"

    def ip_token(self, space: str, user: str | None, key: str | None = None, issuer: str = SITE) -> str:
        visitor = dz.user_visitor(self.users[user]) if user else dz.anonymous_visitor("203.0.113.9")
        return dz.sign_visitor_token(key or self.platform.settings.key, issuer, space, visitor, self.clock())

    def schedule(self, space: str, duration: object = 5, token: str | None = None, queue: bool = False) -> httpx.Response:
        params = {"cgroupPath": "/x", "taskId": 1, "enableQueue": queue, "tokenVersion": 2, "durationSeconds": duration}
        if token is not None:
            params["token"] = token
        return self.client.post(self.url(space, "schedule"), params=params)


def _space(session: object, owner_id: int, name: str, hardware: str) -> str:
    space = Space(owner_id=owner_id, name=name, slug=f"o-{name}", requested_hardware=hardware)
    session.add(space)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    build = Build(space_id=space.id, commit_sha="0" * 40, status="succeeded")
    session.add(build)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    instance = f"sp-o-{name}-{build.id}-1"
    session.add(Instance(space_id=space.id, build_id=build.id, name=instance, runtime="local", state="ready"))  # type: ignore[attr-defined]
    return instance


SUPERVISOR = ("import subprocess, sys, time\n"
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              "print(c.pid, flush=True); time.sleep(300)\n")


@dataclass
class Tree:
    """An instance's process tree in miniature: a supervisor and its child, the stand-in GPU worker."""

    supervisor: subprocess.Popen[str]
    worker: int

    @classmethod
    def start(cls) -> Tree:
        proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        return cls(proc, int(proc.stdout.readline()))

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.worker, signal.SIGKILL)
        self.supervisor.kill()
        self.supervisor.wait()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    platform = Platform(Settings(data_dir=tmp_path / "data", public_url=SITE))
    platform.migrate()
    clock = Clock()
    with platform.tx() as session:
        owner = create_user(session, "o")
        carol, dave = create_user(session, "carol"), create_user(session, "dave")
        users, tokens = {"carol": carol.id, "dave": dave.id}, {"carol": create_token(session, carol)}
        instances = {"o/gpu": _space(session, owner.id, "gpu", "zero-a10g"),
                     "o/other": _space(session, owner.id, "other", "zero-a10g"),
                     "o/cpu": _space(session, owner.id, "cpu", "cpu-basic")}
        zs.add_device(session, zs.quotas.catalog(platform), "nvidia-a10g", 0, "GPU-fake-0")
        zs.set_defaults(session, anonymous=20, signed_in=60, max_duration=30)
        zs.set_quota(session, "dave", 0)
    trees = {space: Tree.start() for space in instances}
    by_instance = {instances[space]: tree for space, tree in trees.items()}
    app = FastAPI()
    api.install(app, platform, runtime=None)
    zero: zs.ZeroGpu = app.state.zerogpu
    zero.clock = clock
    zero.supervisor_pid = lambda name: by_instance[name].supervisor.pid if name in by_instance else None
    caps = {space: dz.instance_capability(platform.settings.key, inst) for space, inst in instances.items()}
    try:
        with TestClient(app) as client:
            yield Site(platform, client, zero, clock, caps, users, tokens, {s: t.worker for s, t in trees.items()})
    finally:
        for tree in trees.values():
            tree.close()
        platform.dispose()


def test_startup_report_and_a_call_granted_allowed_released_and_charged(site: Site) -> None:
    assert site.client.post(site.url("o/gpu", "startup-report")).status_code == 200
    res = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "carol"))
    assert res.status_code == 200 and res.headers["content-type"] == "application/json"
    body = res.json()
    assert set(body) == {"idle", "nvidiaIndex", "nvidiaUUID", "allowToken"}
    assert body["nvidiaUUID"] == "GPU-fake-0" and body["nvidiaIndex"] == 0 and body["idle"] is False
    worker = site.workers["o/gpu"]
    allowed = site.client.post(site.url("o/gpu", "allow"), params={"allowToken": body["allowToken"], "pid": worker})
    assert allowed.status_code == 200
    site.clock.now += 2.5
    released = site.client.post(site.url("o/gpu", "release"), params={"allowToken": body["allowToken"], "fail": False})
    assert released.status_code == 200
    with site.platform.sessions() as session:
        row = session.scalar(select(ZeroGpuLease))
        assert row is not None and row.outcome == "released" and row.duration == 5 and row.pid == worker
        assert row.charged_seconds == pytest.approx(2.5) and row.subject == f"user:{site.users['carol']}"
        assert row.user_id == site.users["carol"] and row.device_uuid == "GPU-fake-0"
        view = zs.quota_of(session, dz.user_visitor(site.users["carol"]), dz_now(site))
    assert view.limit == 60 and view.used == pytest.approx(2.5)
    again = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "carol")).json()
    assert again["idle"] is True  # same instance, same device: the package reuses its worker


def dz_now(site: Site) -> object:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(site.clock(), UTC)


def test_quota_exhausted_answers_429_in_the_packages_shape(site: Site) -> None:
    res = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "dave"))  # dave: 0 s per day
    assert res.status_code == 429
    assert res.headers["X-Approve-Result"] == "quota-exceeded" and res.headers["X-Authenticated"] == "regular"
    assert res.json()["left"] == 0 and res.json()["wait"] > 0  # QuotaInfos(left=0, wait=timedelta(seconds))
    anonymous = site.schedule("o/gpu", 25, token=site.ip_token("o/gpu", None))  # anonymous: 20 s per day
    assert anonymous.status_code == 429 and "X-Authenticated" not in anonymous.headers


def test_illegal_durations_are_refused_with_a_negative_wait(site: Site) -> None:
    for duration in (-5, 0, 31, 10**9, "1e9", "abc", 2.5):  # max_duration is 30
        res = site.schedule("o/gpu", duration, token=site.ip_token("o/gpu", "carol"))
        assert res.status_code == 429 and res.headers["X-Approve-Result"] == "illegal-duration", duration
        assert res.json()["wait"] < 0  # the package says "larger than the maximum allowed"
    assert site.zero.pools.get("nvidia-a10g") is None or not site.zero.pools["nvidia-a10g"].leases


def test_wrong_capability_and_non_zero_flavor_get_404(site: Site) -> None:
    cap = site.caps["o/gpu"]
    for bad in (cap[:-2] + "xx", "sp-o-gpu-1-1", cap.rpartition(".")[0] + "." + site.caps["o/other"].rpartition(".")[2]):
        assert site.client.post(f"/zerogpu/{bad}/schedule", params={"durationSeconds": 5}).status_code == 404
        assert site.client.post(f"/zerogpu/{bad}/startup-report").status_code == 404
    assert site.client.post(site.url("o/cpu", "startup-report")).status_code == 404  # cpu-basic: no ZeroGPU


def test_another_spaces_capability_cannot_release_or_allow_a_lease(site: Site) -> None:
    token = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "carol")).json()["allowToken"]
    theirs = site.workers["o/gpu"]
    assert site.client.post(site.url("o/other", "release"), params={"allowToken": token}).status_code == 404
    assert site.client.post(site.url("o/other", "allow"), params={"allowToken": token, "pid": theirs}).status_code == 403
    assert token in site.zero.pools["nvidia-a10g"].leases  # still leased to o/gpu
    assert site.client.post(site.url("o/gpu", "release"), params={"allowToken": "made-up"}).status_code == 404


def test_allow_refuses_a_pid_that_is_not_the_instances(site: Site) -> None:
    token = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "carol")).json()["allowToken"]
    for pid in (site.workers["o/other"], 1, os.getpid(), 999_999_999):  # another instance's process, init, a process outside
        assert site.client.post(site.url("o/gpu", "allow"), params={"allowToken": token, "pid": pid}).status_code == 403


def test_forged_or_other_site_ip_token_charges_the_space_not_the_named_user(site: Site) -> None:
    for bad in (site.ip_token("o/gpu", "carol", key="another-site-key"),
                site.ip_token("o/gpu", "carol", issuer="http://other.example"),
                site.ip_token("o/other", "carol"),  # minted for another space
                "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyOjIifQ."):  # alg none
        token = site.schedule("o/gpu", 1, token=bad).json()["allowToken"]
        assert site.client.post(site.url("o/gpu", "release"), params={"allowToken": token}).status_code == 200
    with site.platform.sessions() as session:
        subjects = set(session.scalars(select(ZeroGpuLease.subject)))
    assert subjects == {"space:o/gpu"}


def test_a_worker_past_its_lease_is_killed_and_charged_its_duration(site: Site) -> None:
    token = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "carol")).json()["allowToken"]
    worker = site.workers["o/gpu"]
    assert site.client.post(site.url("o/gpu", "allow"), params={"allowToken": token, "pid": worker}).status_code == 200
    site.clock.now += 5 + dz.GRACE_SECONDS - 0.1
    assert site.client.portal.call(site.zero.expire) == []  # type: ignore[union-attr]
    assert procs.is_alive(worker, None)
    site.clock.now += 0.2
    assert [e.token for e in site.client.portal.call(site.zero.expire)] == [token]  # type: ignore[union-attr]
    assert wait_dead(worker)
    assert site.client.post(site.url("o/gpu", "release"), params={"allowToken": token, "fail": True}).status_code == 404
    with site.platform.sessions() as session:
        row = session.scalar(select(ZeroGpuLease))
        assert row is not None and row.outcome == "expired" and row.charged_seconds == 5


def test_busy_device_queues_and_the_stream_hands_it_over(site: Site) -> None:
    first = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "carol")).json()["allowToken"]
    assert site.schedule("o/other", 5).status_code == 503  # enableQueue=false: "No GPU was available"
    got: dict[str, httpx.Response] = {}
    queued = threading.Thread(target=lambda: got.update(r=site.schedule("o/other", 5, queue=True)))
    queued.start()
    while not site.client.get(site.url("o/other", "queue-size")).json():
        queued.join(0.01)
    assert site.client.get(site.url("o/other", "queue-size")).json() == 1.0
    assert site.client.post(site.url("o/gpu", "release"), params={"allowToken": first}).status_code == 200
    queued.join(30)
    res = got["r"]
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
    events = [e for e in res.text.split("\n\n") if e.strip()]
    assert events[-1].startswith("event: succeeded\ndata: ")
    assert all(e == "event: ping" for e in events[:-1])
    handed = dz_json(events[-1])
    assert handed["nvidiaUUID"] == "GPU-fake-0" and handed["idle"] is False  # o/gpu's worker was there


def wait_dead(pid: int) -> bool:
    """SIGKILL is delivered asynchronously: poll (bounded) until the process is gone or a zombie."""
    for _ in range(1000):
        if not procs.is_alive(pid, None):
            return True
        threading.Event().wait(0.01)
    return False


def dz_json(event: str) -> dict[str, object]:
    import json

    return dict(json.loads(event.split("data: ", 1)[1]))


def test_env_only_on_zero_flavors_and_owner_variables_cannot_fake_it(site: Site) -> None:
    spoof = {"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": "http://evil/", "X": "1"}
    assert zs.with_zero_env(site.platform, "cpu-basic", "sp-o-cpu-3-1", spoof) == {"X": "1"}
    env = zs.with_zero_env(site.platform, "zero-t4", "sp-o-gpu-1-1", spoof)
    assert env["SPACES_ZERO_GPU"] == "true" and env["ZEROGPU_CUDA_DEVICE_NAME"] == "Tesla T4"
    base = zs.device_api_base(site.platform.settings)  # the own listener (as root), else PUBLIC_URL
    assert base == (f"http://{netns.LISTENER_ADDRESS}:{dz.listener_port(site.platform.settings.key)}"
                    if os.geteuid() == 0 else SITE)
    assert env["SPACES_ZERO_DEVICE_API_URL"] == f"{base}/zerogpu/{site.caps['o/gpu']}/"
    assert netns.listener_port(env) == (dz.listener_port(site.platform.settings.key) if os.geteuid() == 0 else None)
    assert netns.listener_port(spoof) is None  # an owner's URL never opens the firewall
    # httpx (the package's client) keeps the capability prefix when joining "/schedule"
    joined = httpx.Client(base_url=env["SPACES_ZERO_DEVICE_API_URL"]).build_request("POST", "/schedule").url
    assert str(joined) == f"{base}/zerogpu/{site.caps['o/gpu']}/schedule"
    operator = Settings(data_dir=site.platform.settings.data_dir, public_url=SITE, zerogpu_device_api_url="http://gpu.lan/")
    assert zs.device_api_base(operator) == "http://gpu.lan"


def test_quota_endpoint_for_the_signed_in_caller(site: Site) -> None:
    app = FastAPI()
    api.install(app, site.platform, runtime=None)
    from controller.app import _error_response
    from controller.domain.errors import SpaceportError

    app.state.platform = site.platform
    app.add_exception_handler(SpaceportError, _error_response)
    with TestClient(app) as client:
        res = client.get("/api/spaces/zero-gpu/quota", headers={"authorization": f"Bearer {site.tokens['carol']}"})
        assert res.status_code == 200, res.text
        assert res.json()["limitSeconds"] == 60 and res.json()["usedSeconds"] == 0 and res.json()["user"] == "carol"
        assert client.get("/api/spaces/zero-gpu/quota").status_code == 401


def _stopped(site: Site, space: str, state: str = "stopped") -> str:
    """The reconciler stopped (slept, paused) this space's instance: its row says so."""
    instance = dz.capability_instance(site.platform.settings.key, site.caps[space])
    assert instance is not None
    with site.platform.tx() as session:
        row = session.scalar(select(Instance).where(Instance.name == instance))
        assert row is not None
        row.state = state
    return instance


def test_a_stopped_instance_is_forgotten_its_worker_killed_and_its_device_handed_on(site: Site) -> None:
    token = site.schedule("o/gpu", 5, token=site.ip_token("o/gpu", "carol")).json()["allowToken"]
    worker = site.workers["o/gpu"]
    assert site.client.post(site.url("o/gpu", "allow"), params={"allowToken": token, "pid": worker}).status_code == 200
    got: dict[str, httpx.Response] = {}
    queued = threading.Thread(target=lambda: got.update(r=site.schedule("o/other", 5, queue=True)))
    queued.start()
    while not site.client.get(site.url("o/other", "queue-size")).json():
        queued.join(0.01)
    site.clock.now += 1.5
    instance = _stopped(site, "o/gpu")
    assert site.client.portal.call(site.zero.sweep) == [instance]  # type: ignore[union-attr]
    assert wait_dead(worker)
    queued.join(30)
    events = [e for e in got["r"].text.split("\n\n") if e.strip()]
    assert events[-1].startswith("event: succeeded") and dz_json(events[-1])["idle"] is False
    with site.platform.sessions() as session:
        row = session.scalar(select(ZeroGpuLease).where(ZeroGpuLease.instance == instance))
        assert row is not None and row.outcome == "stopped" and row.charged_seconds == pytest.approx(1.5)
    pool = site.zero.pools["nvidia-a10g"]
    assert instance not in pool.resident.values() and instance not in site.zero.known_instances()
    assert site.client.post(site.url("o/gpu", "release"), params={"allowToken": token}).status_code == 404


def test_light_sleep_kills_idle_workers_and_a_queued_call_of_a_gone_instance_fails(site: Site) -> None:
    token = site.schedule("o/gpu", 5).json()["allowToken"]
    worker = site.workers["o/gpu"]
    assert site.client.post(site.url("o/gpu", "allow"), params={"allowToken": token, "pid": worker}).status_code == 200
    assert site.client.post(site.url("o/gpu", "release"), params={"allowToken": token}).status_code == 200
    instance = _stopped(site, "o/gpu", state="frozen")  # light sleep: a frozen idle worker keeps GPU memory
    assert site.client.portal.call(site.zero.sweep) == [instance]  # type: ignore[union-attr]
    assert wait_dead(worker)
    _stopped(site, "o/gpu", state="ready")  # woken
    blocker = site.schedule("o/other", 5).json()["allowToken"]  # the device is busy: o/gpu's next call waits
    got: dict[str, httpx.Response] = {}
    queued = threading.Thread(target=lambda: got.update(r=site.schedule("o/gpu", 5, queue=True)))
    queued.start()
    while not site.client.get(site.url("o/other", "queue-size")).json():
        queued.join(0.01)
    assert site.client.portal.call(site.zero.sweep) == []  # type: ignore[union-attr]
    _stopped(site, "o/gpu")
    assert site.client.portal.call(site.zero.sweep) == [instance]  # type: ignore[union-attr]
    queued.join(30)
    assert [e for e in got["r"].text.split("\n\n") if e.strip()][-1] == "event: failed"
    assert site.zero.pools["nvidia-a10g"].waiting == []
    assert site.client.post(site.url("o/other", "release"), params={"allowToken": blocker}).status_code == 200


def _queue(site: Site, space: str, count: int, duration: int) -> list[threading.Thread]:
    """`count` calls of `space` waiting in the queue (each in its own thread, blocked on its event stream)."""
    size = int(site.client.get(site.url(space, "queue-size")).json())
    threads = [threading.Thread(target=site.schedule, args=(space, duration), kwargs={"queue": True}) for _ in range(count)]
    for thread in threads:
        thread.start()
    while int(site.client.get(site.url(space, "queue-size")).json()) < size + count:
        threads[0].join(0.01)
    return threads


def test_an_instance_cannot_flood_the_queue_or_queue_past_its_quota(site: Site) -> None:
    blocker = site.schedule("o/other", 5).json()["allowToken"]  # the only device is busy
    flood = _queue(site, "o/gpu", zs.MAX_QUEUED_PER_INSTANCE, 1)  # 16 s of the space's 20 s anonymous quota
    assert site.schedule("o/gpu", 1, queue=True).status_code == 503  # past the cap: "No GPU was available"
    assert site.client.get(site.url("o/other", "queue-size")).json() == zs.MAX_QUEUED_PER_INSTANCE
    refused = site.schedule("o/gpu", 5, queue=True)  # 16 s queued + 5 > 20: the queue counts against the quota
    assert refused.status_code == 429 and refused.headers["X-Approve-Result"] == "quota-exceeded"
    assert refused.json()["left"] == 4
    _stopped(site, "o/gpu")
    site.client.portal.call(site.zero.sweep)  # type: ignore[union-attr]
    for thread in flood:
        thread.join(30)
    assert site.client.post(site.url("o/other", "release"), params={"allowToken": blocker}).status_code == 200
