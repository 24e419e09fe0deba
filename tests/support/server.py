"""A real Spaceport server (`spaceport serve` in a subprocess, with its embedded worker) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
# Tests that exercise path-based app URLs (/apps/OWNER/NAME/) opt in to them, as a trusted site would:
# the default redirects them to host URLs (tests/security/test_app_isolation.py proves that).
TRUSTED_PATHS = "trusted"
# Live servers build lean venvs: the Python the warm uv seed has wheels for (cp311), and only `requests`
# of the hosted base packages (datasets & co. would add minutes to every gradio build in the suite).
# tests/builder/test_venv.py proves the hosted defaults (Python 3.10, the full base set).
LEAN_BUILDS = {"SPACEPORT_BUILD_DEFAULT_PYTHON": "3.11", "SPACEPORT_BUILD_BASE_PACKAGES": "requests"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    data_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    serve_args: tuple[str, ...] = ()  # e.g. ("--no-worker",): the production controller alone
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self, timeout: float = 60) -> LiveServer:
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "controller.cli", "serve", "--port", str(self.port), *self.serve_args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.logs()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, *, remove_apps: bool = True) -> None:
        """Stop the server (and its worker) as an admin would; unless told otherwise also remove its apps."""
        self._stop_server(sig)
        if remove_apps:
            self.cli("remove-all-instances")

    def close(self) -> None:
        """Teardown: kill serve and its worker at once (nothing after a teardown needs their graceful exit:
        a Celery warm shutdown alone takes ~5 s), then remove the apps it started. tests/reliability/
        test_shutdown.py proves the graceful path."""
        self.kill()
        self.cli("remove-all-instances")

    def kill(self) -> None:
        """SIGKILL serve and its embedded worker (its apps live on in their own sessions)."""
        self._stop_server(signal.SIGKILL)

    def _stop_server(self, sig: int) -> None:
        """Stop serve and its worker (same process group); apps live in their own sessions."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def kill_controller_only(self) -> None:
        """SIGKILL the serve process itself (not its group): its worker child and apps live on."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `spaceport ARGS` against this server's data dir: the real CLI (typer app), in this process.

        A `python -m controller.cli` process costs ~5 s of imports on these machines, and the suite runs
        dozens of admin commands; the process entry point itself is tested in test_settings_strict.py.
        The command runs on a thread of its own: commands call asyncio.run, which refuses to run inside a
        caller's event loop (Playwright's sync API and async tests have one), and teardown's
        remove-all-instances failing so left apps running."""
        from typer.testing import CliRunner

        from controller.cli import app

        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SPACEPORT_") and k not in self.env}
        with ThreadPoolExecutor(max_workers=1) as pool:
            run = pool.submit(CliRunner().invoke, app, list(args), env={**unset, **self.env}).result()
        stderr = run.stderr
        if run.exception is not None and not isinstance(run.exception, SystemExit):
            stderr += "".join(traceback.format_exception(run.exception))
        result = subprocess.CompletedProcess(["spaceport", *args], run.exit_code, run.stdout, stderr)
        if check and result.returncode != 0:
            raise RuntimeError(f"spaceport {' '.join(args)} failed: {result.stderr}")
        return result

    def create_user(self, name: str, *, admin: bool = False, password: str | None = None) -> str:
        args = ["users", "create", name, *(["--admin"] if admin else []), *(["--password", password] if password else [])]
        return self.cli(*args).stdout.strip().splitlines()[-1]


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACEPORT_") or k.startswith("SPACEPORT_TEST_")}
    env.update({
        "SPACEPORT_DATA_DIR": str(data_dir),
        "SPACEPORT_APPS_DOMAIN": "localhost",
        "SPACEPORT_RECONCILE_INTERVAL": "0.5",
        "PYTHONUNBUFFERED": "1",
    })
    if not os.environ.get("SPACEPORT_TEST_HOSTED_BUILDS"):  # bench/corpus.py sets it: the hosted defaults
        env.update(LEAN_BUILDS)
    seed = Path.home() / ".cache" / "uv"  # this machine's own (trusted) uv cache: owners' build caches start warm
    if seed.is_dir():
        env["SPACEPORT_BUILD_UV_SEED"] = str(seed)
    # Every test site shares one venv store, as sites on one host may: Gradio's ~5,000 sources are compiled
    # once per suite instead of once per site (~20 CPU-seconds each). tests/builder/test_bytecode.py proves
    # the compile itself on a store of its own.
    env["SPACEPORT_BUILD_STORE"] = str(Path(os.environ.get("SPACEPORT_TEST_STATE", tempfile.gettempdir())) / "venv-store")
    env.update(extra)
    return env


def make_server(tmp_path: Path, **extra: str) -> LiveServer:
    data_dir = tmp_path / "data"
    port = free_port()
    env = server_env(data_dir, SPACEPORT_PUBLIC_URL=f"http://localhost:{port}", **extra)
    return LiveServer(data_dir=data_dir, port=port, env=env)
