"""`spaceport` subcommands for operators: logs, images, quotas, accelerators, gc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from controller.cliopts import DataDir, platform_for, settings_for
from controller.config import Settings
from controller.domain.errors import SpaceportError
from controller.services import quotas

out = Console()
err = Console(stderr=True)
images_app = typer.Typer(help="Base images for container builds.", no_args_is_help=True)
quota_app = typer.Typer(help="Accelerator quotas per user or organization.", no_args_is_help=True)
accel_app = typer.Typer(help="Accelerator inventory (local and docker runtimes).", no_args_is_help=True)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def logs(space: Annotated[str, typer.Argument(help="OWNER/NAME")], build: bool = typer.Option(False, "--build", help="Build logs instead of the app's"),
         follow: bool = typer.Option(False, "--follow", "-f"), url: str | None = typer.Option(None, help="Server URL (default $SPACEPORT_PUBLIC_URL)"),
         token: str | None = typer.Option(None, envvar="SPACEPORT_TOKEN", help="Token for private spaces")) -> None:
    """Print a space's build or run logs (streams with --follow)."""
    base = (url or Settings().public_url or "http://localhost:8000").rstrip("/")
    kind = "build" if build else "run"
    headers = {"authorization": f"Bearer {token}"} if token else {}
    params = {"follow": "true" if follow else "false"}
    try:
        with httpx.stream("GET", f"{base}/api/spaces/{space}/logs/{kind}", params=params, headers=headers, timeout=None) as response:
            if response.status_code != 200:
                response.read()
                _fail(response.json().get("error", response.text) if response.headers.get("content-type", "").startswith("application/json") else response.text)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    print(json.loads(line[6:])["data"], flush=True)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {base}: {exc}")


@images_app.command("bootstrap")
def images_bootstrap(python: Annotated[list[str] | None, typer.Option("--python", help="Python versions")] = None,
                     data_dir: DataDir = None) -> None:
    """Build the local base images from Debian packages (no registry needed); a --python Debian lacks is made from
    an interpreter installed on this host where builds find theirs (pyenv, SPACEPORT_BUILD_PYTHON_PATH). Idempotent."""
    from builder import pythons
    from builder.bootstrap import bootstrap_images
    from controller.runtimes.factory import docker_client
    from controller.services.builds import venv_policy

    settings = settings_for(data_dir)
    client = docker_client(settings.docker_host)
    search = pythons.discovery_env(os.environ, settings.artifacts_dir, venv_policy(settings).python_source)
    with err.status("bootstrapping base images") as status:
        def progress(line: str) -> None:
            status.update(line[:100])
            err.print(f"[dim]{line}[/dim]")

        built = bootstrap_images(client, python_versions=tuple(python or ["3.11"]), ca_dir=settings.extra_ca_dir,
                                 progress=progress, find_python=lambda version: pythons.find(version, search))
    for image in built:
        out.print(image)


@images_app.command("build-spaceport")
def images_build_spaceport(tag: str | None = typer.Option(None, help="Image tag (default spaceport/spaceport:VERSION)"),
                           no_cache: bool = typer.Option(False, "--no-cache"), data_dir: DataDir = None) -> None:
    """Build Spaceport's own image (serve, worker and beat) from this checkout on the bootstrapped bases."""
    from builder.bootstrap import build_spaceport_image
    from builder.errors import BuildFailure
    from controller.runtimes.factory import docker_client

    settings = settings_for(data_dir)
    client = docker_client(settings.docker_host)
    try:
        with err.status("building Spaceport's image") as status:
            def progress(line: str) -> None:
                status.update(line[:100])
                err.print(line, style="dim", highlight=False, markup=False)

            built = build_spaceport_image(client, tag=tag, ca_dir=settings.extra_ca_dir, progress=progress, no_cache=no_cache)
    except BuildFailure as exc:
        _fail(exc.message)
    out.print(built)


@quota_app.command("set")
def quota_set(owner: str, accelerator: str, limit: int, data_dir: DataDir = None) -> None:
    """Let OWNER hold at most LIMIT devices of ACCELERATOR (e.g. nvidia-t4) at once."""
    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            quotas.set_quota(session, platform, owner, accelerator, limit)
    except SpaceportError as exc:
        _fail(exc.message)
    err.print(f"{owner}: at most {limit} x {accelerator}")


@quota_app.command("list")
def quota_list(data_dir: DataDir = None) -> None:
    platform = platform_for(data_dir)
    table = Table("owner", "accelerator", "limit", "in use")
    with platform.sessions() as session:
        for row in quotas.list_quotas(session):
            table.add_row(row.owner, row.accelerator, str(row.limit), str(row.used))
    out.print(table)


@accel_app.command("add")
def accel_add(accelerator: str, count: int = typer.Option(1, "--count"), node: str = "local",
              data_dir: DataDir = None) -> None:
    """Declare COUNT more devices of ACCELERATOR (nvidia-t4, nvidia-a10g, ascend-910b)."""
    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            ids = quotas.add_devices(session, platform, accelerator, count, node)
    except SpaceportError as exc:
        _fail(exc.message)
    err.print(f"added {accelerator} devices {', '.join(ids)}")


@accel_app.command("list")
def accel_list(data_dir: DataDir = None) -> None:
    platform = platform_for(data_dir)
    table = Table("accelerator", "device", "node", "held by")
    with platform.sessions() as session:
        for device in quotas.device_rows(session):
            table.add_row(device.accelerator, device.device_id, device.node, device.holder or "-")
    out.print(table)


@accel_app.command("detect")
def accel_detect() -> None:
    """Count devices with nvidia-smi / npu-smi when present and print what an admin would add."""
    found = False
    if shutil.which("nvidia-smi"):
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.split("\n")
        for name in filter(None, (n.strip() for n in names)):
            found = True
            kind = "nvidia-t4" if "T4" in name else "nvidia-a10g" if "A10G" in name else name
            out.print(f"spaceport accelerators add {kind}  # {name}")
    if shutil.which("npu-smi"):
        found = True
        out.print("npu-smi found: spaceport accelerators add ascend-910b --count N")
    if not found:
        out.print("No nvidia-smi or npu-smi on this host: no accelerators detected.")


def remove_all_instances(data_dir: DataDir = None) -> None:
    """Stop and delete every app instance this site runs (e.g. before wiping the data dir)."""
    import asyncio

    from controller.runtimes.factory import make_runtime

    settings = settings_for(data_dir)

    async def run() -> int:
        runtime = make_runtime(settings)
        found = await runtime.list()
        for status in found:
            await runtime.remove(status.name)
        return len(found)

    err.print(f"removed {asyncio.run(run())} instances")


def gc(data_dir: DataDir = None,
       grace: float | None = typer.Option(None, "--grace", help="Seconds an unused artifact is kept (default $SPACEPORT_GC_GRACE)"),
       dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed")) -> None:
    """Remove build sources, venvs and images that no space's current or running build uses."""
    from controller.services.artifact_gc import collect

    report = collect(platform_for(data_dir), grace=grace, dry_run=dry_run)
    for item in report.removed:  # plain lines (no wrapping): scripts read them
        typer.echo(f"{'would remove' if dry_run else 'removed'} {item.kind} {item.ref}")
    for image in report.images_in_use:
        typer.echo(f"kept image {image}: a container still uses it")
    typer.echo(report.summary(dry_run=dry_run), err=True)


# ---- ZeroGPU (issue 15) ------------------------------------------------------------------------------

zerogpu_app = typer.Typer(help="ZeroGPU: the shared GPU pool and GPU seconds per day.", no_args_is_help=True)


@zerogpu_app.command("add-device")
def zerogpu_add_device(accelerator: str, index: int = typer.Option(..., "--index", help="nvidia-smi's index"),
                       uuid: str = typer.Option(..., "--uuid", help="nvidia-smi -L: GPU-..."), node: str = "local",
                       data_dir: DataDir = None) -> None:
    """Put one GPU of ACCELERATOR (nvidia-t4, nvidia-a10g) in the ZeroGPU pool of the zero-* flavors."""
    from controller.services import zerogpu

    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            zerogpu.add_device(session, quotas.catalog(platform), accelerator, index, uuid, node)
    except SpaceportError as exc:
        _fail(exc.message)
    err.print(f"ZeroGPU pool: {accelerator} #{index} ({uuid})")


@zerogpu_app.command("devices")
def zerogpu_devices(data_dir: DataDir = None) -> None:
    from controller.services import zerogpu

    platform = platform_for(data_dir)
    table = Table("accelerator", "index", "uuid")
    with platform.sessions() as session:
        for device in zerogpu.devices(session):
            table.add_row(device.accelerator, str(device.index), device.uuid)
    out.print(table)


@zerogpu_app.command("defaults")
def zerogpu_defaults(anonymous: int | None = typer.Option(None, help="GPU seconds per day of an anonymous visitor"),
                     signed_in: int | None = typer.Option(None, help="GPU seconds per day of a signed-in user"),
                     max_duration: int | None = typer.Option(None, help="Longest duration one call may ask for"),
                     data_dir: DataDir = None) -> None:
    """Show or set the default quotas (per UTC day) and the longest call."""
    from controller.services import zerogpu

    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            values = zerogpu.set_defaults(session, anonymous=anonymous, signed_in=signed_in, max_duration=max_duration)
    except SpaceportError as exc:
        _fail(exc.message)
    out.print(json.dumps(values))


@zerogpu_app.command("quota")
def zerogpu_quota(account: str, seconds: int | None = typer.Argument(None, help="GPU seconds per day; omit to remove"),
                  data_dir: DataDir = None) -> None:
    """Give a user (or every member of an organization) SECONDS of GPU per day, over the default."""
    from controller.services import zerogpu

    platform = platform_for(data_dir)
    try:
        with platform.tx() as session:
            zerogpu.set_quota(session, account, seconds)
    except SpaceportError as exc:
        _fail(exc.message)
    err.print(f"{account}: {'default' if seconds is None else f'{seconds} s'} of ZeroGPU per day")
