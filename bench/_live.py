"""Shared helpers for the live benchmarks (wake.py, deploy.py): real `spaceport serve` servers on loopback.

Each variant (local sandboxed, local unsandboxed, docker) gets its own server and data dir; everything is
stopped and removed at the end (LiveServer.stop removes the apps it started).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.config import Settings  # noqa: E402
from controller.db.models import Build, Instance, utcnow  # noqa: E402
from controller.services.platform import Platform  # noqa: E402
from controller.services.sleep import sweep  # noqa: E402
from tests.support.server import LiveServer, make_server  # noqa: E402
from tests.support.spaces import push_fixture, runtime  # noqa: E402

__all__ = ["LiveServer", "push_fixture"]

FIXTURES = ROOT / "tests" / "fixtures" / "spaces"


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # run the `finally` blocks that stop servers and remove their apps


signal.signal(signal.SIGTERM, _exit_on_sigterm)


@dataclass(frozen=True)
class Variant:
    """One runtime configuration to measure."""

    name: str
    runtime: str
    env: dict[str, str] = field(default_factory=dict)
    skip: str = ""  # why this variant cannot run here ("" = it can)


def docker_host() -> str:
    """The test Docker engine's address, or "" when none answers."""
    host = os.environ.get("SPACEPORT_TEST_DOCKER_HOST") or os.environ.get("DOCKER_HOST") or ""
    if not host:
        return ""
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except docker.errors.DockerException:
        return ""
    return host


def sandbox_note() -> str:
    from controller.runtimes.sandbox import sandbox_status

    status = sandbox_status()
    return "" if status.available else f"sandbox unavailable: {status.reason}"


def variants() -> list[Variant]:
    """local sandboxed (default), local unsandboxed, docker (skipped with a note without an engine)."""
    host = docker_host()
    unsandboxed = {"SPACEPORT_SANDBOX": "none", "SPACEPORT_ALLOW_UNSANDBOXED": "true"}
    return [
        Variant("local (sandbox)", "local", {}, sandbox_note()),
        Variant("local (no sandbox)", "local", unsandboxed),
        Variant("docker", "docker", {"SPACEPORT_RUNTIME": "docker", "SPACEPORT_DOCKER_HOST": host},
                "" if host else "no Docker engine (set SPACEPORT_TEST_DOCKER_HOST or DOCKER_HOST)"),
    ]


def prepare(variant: Variant) -> None:
    """Make sure what the variant needs exists (base images for docker; ~50 s the first time)."""
    if variant.runtime == "docker":
        import docker

        from builder.bootstrap import ensure_uv_base
        from tests.support.images import ensure_base_images

        ensure_base_images(variant.env["SPACEPORT_DOCKER_HOST"])
        client = docker.DockerClient(base_url=variant.env["SPACEPORT_DOCKER_HOST"], timeout=300)
        try:
            ensure_uv_base(client, progress=lambda _line: None)  # newer than the bases: present on few engines yet
        finally:
            client.close()


@contextlib.contextmanager
def live_server(variant: Variant) -> Iterator[tuple[LiveServer, str]]:
    """A started server for this variant and a write token for user `bench`; stopped (apps removed) after."""
    with tempfile.TemporaryDirectory(prefix="spaceport-bench-") as tmp:
        server = make_server(Path(tmp), **variant.env)
        try:
            server.start()
            yield server, server.create_user("bench")
        finally:
            server.stop()


def wall() -> float:
    return time.time()


def epoch(moment: datetime) -> float:
    """A database timestamp (naive UTC) as seconds since the epoch."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def host_get(server: LiveServer, slug: str, path: str = "/", timeout: float = 300) -> httpx.Response:
    """One GET through the proxy, host based, as an API client (held by the activator while waking)."""
    headers = {"Host": f"{slug}.localhost:{server.port}", "Accept": "*/*"}
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=timeout)


def wait_proxy(server: LiveServer, slug: str, marker: str = "", path: str = "/", timeout: float = 600,
               interval: float = 0.05) -> float:
    """Poll through the proxy until a 200 (whose body holds `marker`); return the wall time it came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            response = host_get(server, slug, path)
            if response.status_code == 200 and marker in response.text:
                return wall()
        time.sleep(interval)
    raise RuntimeError(f"{slug} did not answer 200{f' with {marker!r}' if marker else ''} in {timeout:.0f} s:\n"
                       f"{server.logs()[-3000:]}")


def wait_url(url: str, timeout: float = 300, interval: float = 0.02) -> float:
    """Poll one URL directly (not through the proxy) until it answers 200; return the wall time."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return wall()
            time.sleep(interval)
    raise RuntimeError(f"{url} did not answer 200 in {timeout:.0f} s")


def wait_for(what: str, check: object, timeout: float = 120, interval: float = 0.05) -> None:
    """Poll a zero-argument predicate until true."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def stage(server: LiveServer, space: str) -> str:
    return str(runtime(server, space).get("stage"))


def wait_stage(server: LiveServer, space: str, stages: set[str], timeout: float = 600) -> str:
    bad = {"BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR", "NO_APP_FILE"} - stages
    found = ""

    def reached() -> bool:
        nonlocal found
        found = stage(server, space)
        if found in bad:
            raise RuntimeError(f"{space} is {found}: {runtime(server, space)}\n{server.logs()[-3000:]}")
        return found in stages

    wait_for(f"{space} in {stages}", reached, timeout)
    return found


@contextlib.contextmanager
def platform(server: LiveServer) -> Iterator[Platform]:
    plat = Platform(Settings(data_dir=server.data_dir))
    try:
        yield plat
    finally:
        plat.dispose()


def sweep_ahead(server: LiveServer, hours: float) -> int:
    """Run the idle sweep as if `hours` had passed (the injected clock of the sleep tests)."""
    with platform(server) as plat:
        return sweep(plat, now=utcnow() + timedelta(hours=hours))


def instances(server: LiveServer, slug: str) -> list[tuple[str, int, str, str | None, float]]:
    """(name, generation, state, endpoint, started_at epoch) of the space's instances, newest first."""
    from sqlalchemy import select

    with platform(server) as plat, plat.tx() as session:
        rows = session.scalars(select(Instance).where(Instance.name.startswith(f"sp-{slug}-"))
                               .order_by(Instance.id.desc()))
        return [(r.name, r.generation, r.state, r.endpoint, epoch(r.started_at)) for r in rows]


def builds(server: LiveServer, slug_owner: str, name: str) -> list[tuple[int, str, float | None, float | None]]:
    """(id, status, started_at, finished_at) of a space's builds, newest first (epoch seconds)."""
    from sqlalchemy import select

    from controller.db.models import Account, Space

    with platform(server) as plat, plat.tx() as session:
        query = (select(Build).join(Space, Build.space_id == Space.id).join(Account, Space.owner_id == Account.id)
                 .where(Account.name == slug_owner, Space.name == name).order_by(Build.id.desc()))
        return [(b.id, str(b.status), epoch(b.started_at) if b.started_at else None,
                 epoch(b.finished_at) if b.finished_at else None) for b in session.scalars(query)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(seconds: float) -> str:
    return "—" if seconds != seconds else f"{seconds:6.2f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table (pipe separated, so it pastes into Markdown)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Inspector:
    """What the runtime itself says about one instance: its endpoint, frozen, stopped (local or docker)."""

    def __init__(self, server: LiveServer, variant: Variant) -> None:
        self.server, self.variant = server, variant
        self._client = None
        if variant.runtime == "docker":
            import docker

            self._client = docker.DockerClient(base_url=variant.env["SPACEPORT_DOCKER_HOST"], timeout=30)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _record(self, name: str) -> dict[str, object]:
        import json

        path = self.server.data_dir / "runtime" / "instances" / name / "state.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}

    def _container(self, name: str) -> object | None:
        import docker

        from controller.runtimes.docker import container_name, site_id

        assert self._client is not None
        try:
            return self._client.containers.get(container_name(name, site_id(self.server.data_dir)))
        except docker.errors.NotFound:
            return None

    def endpoint(self, name: str) -> str | None:
        """http://host:port of the instance as soon as the runtime has started it."""
        if self._client is None:
            record = self._record(name)
            return f"http://{record['host']}:{record['port']}" if record.get("port") else None
        container = self._container(name)
        ports = (getattr(container, "attrs", {}).get("NetworkSettings", {}).get("Ports") or {}) if container else {}
        for bindings in ports.values():
            for binding in bindings or []:
                if binding.get("HostPort"):
                    return f"http://127.0.0.1:{binding['HostPort']}"
        return None

    def frozen(self, name: str) -> bool:
        if self._client is None:
            return bool(self._record(name).get("frozen"))
        container = self._container(name)
        return container is not None and getattr(container, "status", "") == "paused"

    def stopped(self, name: str) -> bool:
        if self._client is None:
            pid = int(str(self._record(name).get("pid") or 0))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return pid == 0
        container = self._container(name)
        return container is None or getattr(container, "status", "") in ("exited", "created")
