"""Sleep (deep) and stop end the `spaces` package's forked GPU workers too.

The package's worker is a fork of the app that survives a SIGTERM (it installs a handler that only closes
its queue). The local runtime's stop SIGTERMs the app, waits, then kills what is left of the instance: its
cgroup (cgroup.kill) or, without cgroups, every descendant of its supervisor (procs.signal_tree SIGKILL).
This holds it to that with a real sandboxed instance whose forked child ignores SIGTERM."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import uv

from builder.artifact import VenvArtifact
from controller.runtimes import procs
from controller.runtimes.base import HardwareSpec, InstanceSpec
from controller.runtimes.health import wait_healthy
from controller.runtimes.local import LocalRuntime
from controller.runtimes.sandbox import sandbox_status
from tests.support.tiers import missing

APP = '''import http.server, os, signal, time

child = os.fork()
if child == 0:  # like spaces' worker: SIGTERM only closes its queue, the process lives on
    signal.signal(signal.SIGTERM, lambda *_: None)
    while True:
        time.sleep(1)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(child).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "7860"))), Handler).serve_forever()
'''


def forked_worker(runtime: LocalRuntime, name: str) -> int:
    """The host pid of the app's forked child: the deepest python below the supervisor running app.py."""
    supervisor = runtime.pid(name)
    assert supervisor is not None
    apps = [p for p in procs.descendants(supervisor) if b"app.py" in _cmdline(p)]
    assert len(apps) >= 2, f"app and its fork not found: {apps}"
    return max(apps, key=lambda p: len(_ancestors(p, supervisor)))


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ancestors(pid: int, stop: int) -> list[int]:
    chain = []
    while pid not in (0, 1, stop):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        pid = int(fields[1])
        chain.append(pid)
    return chain


async def test_stop_kills_a_forked_child_that_ignores_sigterm(tmp_path: Path) -> None:
    status = sandbox_status()
    if not status.available:
        missing(f"sandbox unavailable: {status.reason} ({status.fix})")
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(APP)
    source.chmod(0o755)
    venv = tmp_path / "venv"
    subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", "/usr/bin/python3", str(venv)], check=True)
    tmp_path.chmod(0o755)
    runtime = LocalRuntime(tmp_path / "state", sandbox="bwrap", protected_paths=[tmp_path / "data"], stop_timeout=2)
    artifact = VenvArtifact(venv=venv, source=source, command=("python", "app.py"), port=7860)
    spec = InstanceSpec(name="zgstop", space_id="test/zgstop", artifact=artifact, env={},
                        hardware=HardwareSpec(cpu=1.0, memory_mb=256, pids=64, disk_mb=64))
    try:
        endpoint = await runtime.start(spec)
        assert await wait_healthy(endpoint, timeout=60)
        worker = forked_worker(runtime, spec.name)
        started = procs.start_time(worker)
        await runtime.stop(spec.name)
        for _ in range(500):  # SIGKILL lands asynchronously; bounded
            if not procs.is_alive(worker, started):
                break
            threading.Event().wait(0.01)
        assert not procs.is_alive(worker, started), "the forked worker outlived stop"
    finally:
        await runtime.remove(spec.name)
