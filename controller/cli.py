"""The `spaceport` command. Every command honours SPACEPORT_DATA_DIR (or --data-dir)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from controller import cli_admin
from controller.cliopts import DataDir, platform_for, report_unknown_settings, settings_for
from controller.config import Settings, UnknownSettingError
from controller.domain.errors import SpaceportError
from controller.services import accounts
from controller.services.platform import Platform

app = typer.Typer(help="Spaceport: host Gradio, Streamlit, Docker and static apps.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
tokens_app = typer.Typer(help="Manage access tokens.", no_args_is_help=True)
orgs_app = typer.Typer(help="Manage organizations.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(orgs_app, name="orgs")
app.add_typer(cli_admin.images_app, name="images")
app.add_typer(cli_admin.quota_app, name="quota")
app.add_typer(cli_admin.accel_app, name="accelerators")
app.add_typer(cli_admin.zerogpu_app, name="zerogpu")
app.command()(cli_admin.logs)
app.command("remove-all-instances")(cli_admin.remove_all_instances)
app.command("gc")(cli_admin.gc)
err = Console(stderr=True)

def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@users_app.command("create")
def users_create(name: str, admin: bool = typer.Option(False, "--admin"), password: str | None = typer.Option(None, "--password"),
                 email: str | None = None, data_dir: DataDir = None) -> None:
    """Create a user and print a new write token (the last line of stdout)."""
    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            user = accounts.create_user(session, name, password=password, admin=admin, email=email)
            token = accounts.create_token(session, user, "cli")
    except SpaceportError as exc:
        fail(exc.message)
    err.print(f"Created {'admin ' if admin else ''}user [bold]{name}[/bold]. Write token:")
    print(token)


@tokens_app.command("create")
def tokens_create(user: str, name: str = "cli", scope: str = typer.Option("write", help="read or write"),
                  data_dir: DataDir = None) -> None:
    """Create a token for USER and print it."""
    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            token = accounts.create_token(session, accounts.require_account(session, user), name, scope)
    except SpaceportError as exc:
        fail(exc.message)
    print(token)


@orgs_app.command("create")
def orgs_create(org: str, member: Annotated[list[str] | None, typer.Option("--member")] = None,
                data_dir: DataDir = None) -> None:
    """Create an organization with members."""
    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            accounts.create_org(session, org, member or [])
    except SpaceportError as exc:
        fail(exc.message)
    err.print(f"Created organization [bold]{org}[/bold] with members: {', '.join(member or []) or 'none'}")


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000, data_dir: DataDir = None,
          worker: bool = typer.Option(True, help="Also run an embedded build worker and beat")) -> None:
    """Run Spaceport: API, git, web UI and proxy on one port, plus an embedded worker."""
    settings = settings_for(data_dir)  # first: a wrong setting ends the command before the slow imports
    import uvicorn

    from controller.accesslog import log_config
    from controller.app import create_app
    from controller.dataplane import front

    if not settings.public_url:
        os.environ["SPACEPORT_PUBLIC_URL"] = f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{port}"
        settings = Settings()
    platform = Platform(settings)
    platform.migrate()
    platform.dispose()  # no pooled connection may be shared with the forked worker
    children = [_start_worker(settings, port=port)] if worker else []
    _log_to_stderr()
    err.print(f"Spaceport on [bold]{settings.public_url}[/bold], data in {settings.data_dir}")
    # uvicorn shuts down on SIGTERM, then restores the previous handler and raises the signal again: with
    # the default handler the process would die there, before `finally` stops the embedded worker.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        asgi = create_app(settings)
        with front(settings, host, port, asgi) as (app_host, app_port):  # HAProxy on the port, when installed
            uvicorn.run(asgi, host=app_host, port=app_port, log_level="info", loop="uvloop", log_config=log_config(),
                        http="httptools", ws="websockets", timeout_graceful_shutdown=5,
                        server_header=False, date_header=False)  # the proxied app's own headers pass through
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _log_to_stderr() -> None:
    """Spaceport's own INFO logs (security posture, reconciler decisions) next to uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    root = logging.getLogger("controller")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def _start_worker(settings: Settings, *, port: int) -> Child:
    """The embedded worker (with beat), forked from serve once the modules both run are imported: a fresh
    `python -m controller.cli worker` spent ~3.5 CPU-seconds importing them again on every start. A process
    that already runs threads is not forked (a lock held by another thread stays held in the child): then
    the worker is a new process, as `spaceport worker` would be."""
    os.environ.update(SPACEPORT_DATA_DIR=str(settings.data_dir), SPACEPORT_PUBLIC_URL=settings.public_url)
    schedule = settings.data_dir / f"celerybeat-schedule-{port}"  # replicas sharing a data dir: one file each
    import controller.tasks  # noqa: F401  (the Celery app and its tasks, before the fork)

    if threading.active_count() > 1:
        cmd = [sys.executable, "-m", "controller.cli", "worker", "--concurrency", "2", "--beat", "--schedule", str(schedule)]
        return subprocess.Popen(cmd)
    pid = os.fork()
    if pid == 0:  # the child never returns into serve
        code = 1
        try:
            _run_worker(settings, concurrency=2, schedule=schedule)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # said on stderr, as a worker process would
            traceback.print_exc()
        finally:
            os._exit(code)
    return ForkedChild(pid)


class ForkedChild:
    """A forked child process with the part of subprocess.Popen's interface serve uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return 0  # already reaped
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)


Child = subprocess.Popen[bytes] | ForkedChild


def _run_worker(settings: Settings, *, concurrency: int, schedule: Path | None) -> None:
    """Celery's worker for builds; with a `schedule` file it also runs beat (the idle sweep schedule)."""
    from controller.tasks import celery_app

    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "-Q", "spaceport", "--without-gossip",
            "--without-mingle", f"--hostname=spaceport-{os.getpid()}@%h"]  # several workers may share a host
    if schedule is not None:
        argv += ["--beat", f"--schedule={schedule}"]
    celery_app.worker_main(argv)


@app.command()
def worker(concurrency: int = 2, beat: bool = typer.Option(False, "--beat", help="Embed the beat scheduler"),
           schedule: Path | None = typer.Option(None, help="Beat's schedule file (default DATA_DIR/celerybeat-schedule)"),
           data_dir: DataDir = None) -> None:
    """Run a Celery worker for builds (and, with --beat, the idle sweep schedule)."""
    settings = settings_for(data_dir)
    Platform(settings).migrate()
    _run_worker(settings, concurrency=concurrency,
                schedule=(schedule or settings.data_dir / "celerybeat-schedule") if beat else None)


@app.command()
def beat(data_dir: DataDir = None) -> None:
    """Run the Celery beat scheduler on its own (production: one per site)."""
    settings = settings_for(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # its schedule file goes there (k8s: an emptyDir)
    from controller.tasks import celery_app

    celery_app.start(["beat", "--loglevel=INFO", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"])


def main() -> None:
    try:
        app()
    except UnknownSettingError as exc:  # Settings built outside settings_for (e.g. by `logs`, controller.tasks)
        sys.exit(report_unknown_settings(exc))


if __name__ == "__main__":
    main()
