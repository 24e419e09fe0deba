"""The local runtime must not hand the platform to whoever pushes an app."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import uv

from builder.artifact import VenvArtifact
from controller.runtimes import sandbox
from controller.runtimes.appenv import APP_DIR
from controller.runtimes.base import Endpoint, HardwareSpec, InstanceSpec, State
from controller.runtimes.health import wait_healthy
from controller.runtimes.local import LocalRuntime
from tests.runtimes.conftest import copy_app

HARDWARE = HardwareSpec(cpu=1.0, memory_mb=256, pids=64, disk_mb=64)
SECRET = "victim-secret-6f1d2c"
EXPECTED = {"read_protected_0", "read_protected_1", "read_protected_2", "read_other_source", "read_other_env",
            "write_outside_home", "list_host_processes", "kill_host_process", "fork_bomb", "fill_home", "fill_tmp"}  # fmt: skip


def host_ipv4() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


@pytest.fixture
async def controller_port() -> AsyncIterator[int]:
    """Stands in for the controller's internal endpoints: listens on every address."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "0.0.0.0", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def fetch(endpoint: Endpoint, path: str = "/") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(endpoint.url + path) as response,
    ):
        return response.status, await response.text()


async def test_hostile_app_is_contained(
    sandbox_ok: None, tmp_path: Path, sources: Path, system_venv: Path, controller_port: int
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "spaceport.db").write_text("SQLite format 3 pretend")
    (data / "spaceport.db").chmod(0o644)  # readable by mode: only the sandbox's view protects it
    (data / "platform.key").write_text("platform-signing-key")
    runtime = LocalRuntime(tmp_path / "state", sandbox="bwrap", protected_paths=[data], stop_timeout=5)
    victim = InstanceSpec(name="victim", space_id="bob/echo", env={"SECRET": SECRET}, hardware=HARDWARE,
                          artifact=VenvArtifact(system_venv, sources / "echo", ("python", "app.py"), 7860))  # fmt: skip
    try:
        victim_ep = await runtime.start(victim)
        assert await wait_healthy(victim_ep, timeout=30)
        targets = [f"{ip}:{controller_port}" for ip in host_ipv4()] + [f"{victim_ep.host}:{victim_ep.port}"]
        env = {
            "HOSTILE_PROTECTED": os.pathsep.join([str(data / "spaceport.db"), str(data / "platform.key"),
                                                  str(runtime.instances / "victim" / "state.json")]),
            "HOSTILE_OTHER_SRC": str(sources / "echo" / "app.py"),
            "HOSTILE_OTHER_SECRET": SECRET,
            "HOSTILE_HOST_PID": str(os.getpid()),
            "HOSTILE_CONNECT": ",".join(targets),
        }  # fmt: skip
        hostile = InstanceSpec(name="hostile", space_id="mallory/evil", env=env, hardware=HARDWARE,
                               artifact=VenvArtifact(system_venv, sources / "hostile", ("python", "app.py"), 7860))  # fmt: skip
        hostile_ep = await runtime.start(hostile)
        assert await wait_healthy(hostile_ep, timeout=120), (await runtime.status("hostile")).message
        results = json.loads((await fetch(hostile_ep))[1])
        assert EXPECTED | {f"connect {t}" for t in targets} <= set(results)
        escaped = {name: r["detail"] for name, r in results.items() if not r["blocked"]}
        assert not escaped, escaped
        logs = "\n".join([line async for line in runtime.logs("hostile", follow=False)])
        assert "ATTEMPT fork_bomb: BLOCKED" in logs and "ATTEMPT read_protected_1: BLOCKED" in logs
        uid = int(re.search(r"hostile app starting as uid (\d+)", logs).group(1))  # type: ignore[union-attr]
        assert uid >= 100000 and uid != os.getuid()  # its own uid in the 100000 range, never root
        assert not (system_venv / "bin" / "hostile-was-here").exists()  # its venv writes stay in its own layer
        assert (await fetch(victim_ep))[0] == 200  # the other instance keeps serving
        assert (await runtime.status("victim")).state == State.RUNNING
    finally:
        for name in ("hostile", "victim"):
            await runtime.remove(name)


async def test_instances_get_distinct_unprivileged_uids(sandbox_ok: None, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    uids = {sandbox.space_uid(registry, key) for key in ("a/x", "b/y", "c/z")}
    assert len(uids) == 3 and all(uid >= sandbox.UID_BASE for uid in uids)
    assert sandbox.space_uid(registry, "a/x") in uids  # stable


def _plan(tmp_path: Path, protected: tuple[Path, ...] = ()) -> sandbox.SandboxPlan:
    return sandbox.SandboxPlan(uid=100_007, home=tmp_path / "home", etc_dir=tmp_path / "etc",
                               ro_paths=(tmp_path / "src", tmp_path / "venv"), protected=protected,
                               tmp_size_bytes=1 << 20)  # fmt: skip


def test_bwrap_argv_isolates_and_outlives_controller(tmp_path: Path) -> None:
    argv = sandbox.bwrap_argv(_plan(tmp_path), ["python", "app.py"])
    assert "--die-with-parent" not in argv
    assert {"--unshare-pid", "--unshare-ipc"} <= set(argv)
    assert "--reuid=100007" in argv and "--no-new-privs" in argv and "--bounding-set=-all" in argv
    assert argv[-2:] == ["python", "app.py"]
    binds = {argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")}
    assert "/" not in binds and str(tmp_path) not in binds and "/root" not in binds


def test_protected_path_inside_a_bound_dir_is_masked(tmp_path: Path) -> None:
    secret = tmp_path / "venv" / "db"
    argv = sandbox.bwrap_argv(_plan(tmp_path, (secret,)), ["true"])
    assert ["--ro-bind", "/dev/null", str(secret)] == argv[argv.index(str(secret)) - 2: argv.index(str(secret)) + 1]
    with pytest.raises(RuntimeError):
        sandbox.bwrap_argv(_plan(tmp_path, (tmp_path / "src",)), ["true"])


def test_app_code_is_an_overlay_at_home_user_app_never_its_host_path(tmp_path: Path) -> None:
    plan = dataclasses.replace(_plan(tmp_path), ro_paths=(tmp_path / "venv",), app_source=tmp_path / "src",
                               app_layer=tmp_path / "layer", workdir=APP_DIR)  # fmt: skip
    argv = sandbox.bwrap_argv(plan, ["python", "/home/user/app/app.py"])
    pairs = {(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")}
    assert (str(tmp_path / "src"), f"{sandbox.APP_STAGING}/lower") in pairs  # read-only: the overlay's lower layer
    assert (str(tmp_path / "layer"), f"{sandbox.APP_STAGING}/layer") in pairs
    assert str(tmp_path / "src") not in {dest for _, dest in pairs}
    setup = argv.index(sandbox.APP_SETUP)
    assert argv[setup - 2:setup + 5] == ["/bin/sh", "-c", sandbox.APP_SETUP, "spaceport-appdir", "100007", "", APP_DIR]
    assert setup < argv.index("/usr/bin/setpriv")  # mounted as root, then the app's uid
    assert f'a={APP_DIR}' in sandbox.APP_SETUP and "metacopy=on" in sandbox.APP_SETUP
    for protected in (tmp_path / "src" / "secret", tmp_path):  # an overlay's lower layer cannot be masked
        with pytest.raises(RuntimeError):
            sandbox.bwrap_argv(dataclasses.replace(plan, protected=(protected,)), ["true"])


def test_venv_is_an_overlay_over_its_sealed_self_when_a_layer_is_given(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    plan = dataclasses.replace(_plan(tmp_path), venv=venv, venv_dirs=tmp_path / "vdirs", venv_layer=tmp_path / "vlayer")
    argv = sandbox.bwrap_argv(plan, ["python", "app.py"])
    pairs = [(argv[i], argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    assert ("--ro-bind", str(venv), str(venv)) in pairs  # the mount point (and what stays if overlayfs fails)
    assert ("--ro-bind", str(venv), f"{sandbox.VENV_STAGING}/lower") in pairs  # the sealed venv: read-only
    assert ("--ro-bind", str(tmp_path / "vdirs"), f"{sandbox.VENV_STAGING}/dirs") in pairs
    assert ("--bind", str(tmp_path / "vlayer"), f"{sandbox.VENV_STAGING}/layer") in pairs
    setup = argv.index(sandbox.APP_SETUP)
    assert argv[setup + 1:setup + 5] == ["spaceport-appdir", "100007", str(venv), ""]
    assert setup < argv.index("/usr/bin/setpriv")
    assert "lowerdir=$v/dirs:$v/lower" in sandbox.APP_SETUP
    with pytest.raises(RuntimeError, match="protected"):
        sandbox.bwrap_argv(dataclasses.replace(plan, protected=(venv / "lib" / "secret",)), ["true"])
    with pytest.raises(RuntimeError, match="read-only bind"):
        sandbox.bwrap_argv(dataclasses.replace(plan, ro_paths=(tmp_path / "src",)), ["true"])


def test_prepare_venv_layer_mirrors_directories_only_never_files_or_links(tmp_path: Path) -> None:
    venv, dirs, layer = tmp_path / "venv", tmp_path / "vdirs", tmp_path / "vlayer"
    (venv / "lib" / "site-packages" / "pkg").mkdir(parents=True)
    (venv / "lib" / "site-packages" / "pkg" / "mod.py").write_text("x = 1\n")
    (venv / "lib64").symlink_to("lib")
    outside = tmp_path / "outside"
    outside.mkdir()
    (venv / "lib" / "site-packages" / "linked").symlink_to(outside)
    (layer / "upper").mkdir(parents=True)
    (layer / "upper" / "written-last-run").write_text("x")
    sandbox.prepare_venv_layer(venv, dirs, layer, 100_007)
    made = sorted(str(p.relative_to(dirs)) for p in dirs.rglob("*"))
    assert made == ["lib", "lib/site-packages", "lib/site-packages/pkg"]  # no files, no links, nothing followed
    assert all(p.stat().st_uid == 100_007 for p in [dirs, *dirs.rglob("*")])
    assert (venv / "lib" / "site-packages" / "pkg").stat().st_uid == os.getuid() and outside.stat().st_uid == os.getuid()
    assert list((layer / "upper").iterdir()) == [] and (layer / "upper").stat().st_uid == 100_007
    (venv / "lib" / "new").mkdir()
    sandbox.prepare_venv_layer(venv, dirs, layer, 100_007)  # made once per instance (the venv is sealed)
    assert not (dirs / "lib" / "new").exists()


def test_prepare_app_dir_empties_the_layer_and_never_follows_what_the_app_left(tmp_path: Path) -> None:
    home, layer = tmp_path / "home", tmp_path / "layer"
    home.mkdir()
    (layer / "upper").mkdir(parents=True)
    (layer / "upper" / "written-last-run").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "app").symlink_to(outside)  # planted by the app in its persistent home
    sandbox.prepare_app_dir(home, layer, 100_007)
    assert not (home / "app").is_symlink() and (home / "app").is_dir() and (home / "app").stat().st_uid == 100_007
    assert outside.stat().st_uid == os.getuid()
    assert list((layer / "upper").iterdir()) == [] and (layer / "work").is_dir()
    sandbox.discard_app_writes(layer)
    assert not layer.exists()


def test_accelerator_devices_only_for_the_assigned_ids() -> None:
    present = {"/dev/nvidia1", "/dev/nvidiactl", "/dev/davinci3", "/dev/davinci_manager", sandbox.ASCEND_DRIVER}
    nodes, driver = sandbox.accelerator_devices("nvidia-t4", ("1",), present.__contains__)
    assert nodes == ("/dev/nvidia1", "/dev/nvidiactl") and driver == ()
    nodes, driver = sandbox.accelerator_devices("ascend-910b", ("3",), present.__contains__)
    assert nodes == ("/dev/davinci3", "/dev/davinci_manager") and driver == (sandbox.ASCEND_DRIVER,)


GRADIO_APP = """
import gradio as gr

demo = gr.Interface(fn=lambda name: f"Hello {name}!", inputs="text", outputs="text")
demo.launch()
"""


@pytest.fixture(scope="session")
def gradio_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("gradio") / "venv"
    uv_bin = uv.find_uv_bin()
    subprocess.run([uv_bin, "venv", "-q", "--python", "/usr/bin/python3", str(venv)], check=True)
    subprocess.run([uv_bin, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "gradio"], check=True)
    return venv


async def test_gradio_app_runs_under_the_sandbox(sandbox_ok: None, tmp_path: Path, gradio_venv: Path) -> None:
    source = tmp_path / "gradio-src"
    source.mkdir()
    (source / "app.py").write_text(GRADIO_APP)
    copy_app_perms(source)
    runtime = LocalRuntime(tmp_path / "state", sandbox="bwrap", stop_timeout=5)
    spec = InstanceSpec(name="gradio", space_id="alice/hello", hardware=HardwareSpec(memory_mb=2048, pids=256),
                        artifact=VenvArtifact(gradio_venv, source, ("python", "app.py"), 7860))  # fmt: skip
    try:
        endpoint = await runtime.start(spec)
        assert await wait_healthy(endpoint, timeout=120), (await runtime.status("gradio")).message
        status, body = await fetch(endpoint)
        assert status == 200 and "gradio" in body.lower()
        assert (await fetch(endpoint, "/config"))[0] == 200
    finally:
        with contextlib.suppress(Exception):
            await runtime.remove("gradio")


VENV_WRITER = r"""
import http.server, json, os, sysconfig
sp = sysconfig.get_paths()["purelib"]
pkg = os.path.join(sp, "sealedpkg")
seen = {"data": open(os.path.join(pkg, "data.txt")).read(), "cache": os.path.exists(os.path.join(pkg, "cache"))}
results = {}
def attempt(name, action):
    try:
        action()
        results[name] = "ok"
    except OSError as exc:
        results[name] = type(exc).__name__
def cache():
    os.makedirs(os.path.join(pkg, "cache"))
    open(os.path.join(pkg, "cache", "entry.json"), "w").write("{}")
def replace():
    open(os.path.join(pkg, "data.tmp"), "w").write("replaced by the app")
    os.replace(os.path.join(pkg, "data.tmp"), os.path.join(pkg, "data.txt"))
attempt("cache", cache)
attempt("new_script", lambda: open(os.path.join(os.path.dirname(sp), "..", "..", "bin", "tool"), "w").write("x"))
attempt("append_in_place", lambda: open(os.path.join(pkg, "other.txt"), "a").write("tampered"))
attempt("replace", replace)
attempt("unlink", lambda: os.unlink(os.path.join(pkg, "other.txt")))
attempt("chmod_sealed", lambda: os.chmod(os.path.join(pkg, "__init__.py"), 0o777))
seen_after = open(os.path.join(pkg, "data.txt")).read()
body = json.dumps({"seen": seen, "results": results, "after": seen_after}).encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"""


async def test_app_writes_its_venv_in_its_own_layer_never_the_sealed_venv(sandbox_ok: None, tmp_path: Path) -> None:
    """Apps write into their own site-packages (a cache dir in a package, `pip install` at start): allowed
    as on the hosted images, but only in the instance's layer: the sealed venv another space (or the next
    start) runs from never changes, and what exists can be replaced, never written in place."""
    venv = tmp_path / "venvs" / "sealed"
    subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", "/usr/bin/python3", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    pkg = Path(purelib) / "sealedpkg"
    pkg.mkdir()
    for name, text in (("__init__.py", ""), ("data.txt", "sealed"), ("other.txt", "sealed too")):
        (pkg / name).write_text(text)
    for path in [venv, *venv.rglob("*")]:  # sealed as the build sandbox leaves it: root's, read-only to apps
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o100 else 0o644)
    venv.parent.chmod(0o755)
    before = {str(p): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"") for p in venv.rglob("*")}
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(VENV_WRITER)
    copy_app_perms(source)
    runtime = LocalRuntime(tmp_path / "state", sandbox="bwrap", stop_timeout=5)
    artifact = VenvArtifact(venv, source, ("python", "app.py"), 7860)
    first = InstanceSpec(name="writer", space_id="mallory/writer", hardware=HARDWARE, artifact=artifact)
    other = InstanceSpec(name="other", space_id="mallory/other", hardware=HARDWARE, artifact=artifact)
    try:
        report = await _report(runtime, first)
        assert report["seen"] == {"data": "sealed", "cache": False}
        assert report["results"] == {"cache": "ok", "new_script": "ok", "append_in_place": "PermissionError",
                                     "replace": "ok", "unlink": "ok", "chmod_sealed": "PermissionError"}
        assert report["after"] == "replaced by the app"
        assert (await _report(runtime, other))["seen"] == {"data": "sealed", "cache": False}  # another space
        await runtime.stop("writer")
        assert (await _report(runtime, first))["seen"] == {"data": "sealed", "cache": False}  # the next start
        after = {str(p): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"") for p in venv.rglob("*")}
        assert after == before  # the sealed venv itself never changed
        assert all(p.lstat().st_uid == 0 for p in [venv, *venv.rglob("*")])
    finally:
        for name in ("writer", "other"):
            with contextlib.suppress(Exception):
                await runtime.remove(name)


async def _report(runtime: LocalRuntime, spec: InstanceSpec) -> dict[str, object]:
    endpoint = await runtime.start(spec)
    assert await wait_healthy(endpoint, timeout=60), (await runtime.status(spec.name)).message
    status, body = await fetch(endpoint)
    assert status == 200, body
    report: dict[str, object] = json.loads(body)
    return report


def copy_app_perms(source: Path) -> None:
    for path in [source, *source.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    source.parent.chmod(0o755)


assert copy_app  # shared helper (imported for other tests in this module's family)
