"""Attacks on the local runtime's launcher and logs (issue 18 items 2 and 6): a space's variables and secrets
must never steer the root-side launcher (PATH, LD_PRELOAD), the platform's names are refused saying why, and
secrets an app prints never reach app.log on disk. Real sandbox, real processes, a real server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import uv

from builder.artifact import VenvArtifact
from controller.runtimes.base import Endpoint, HardwareSpec, InstanceSpec
from controller.runtimes.health import wait_healthy
from controller.runtimes.local import LocalRuntime
from controller.runtimes.sandbox import sandbox_status
from tests.security import Identity, create_space, host_get
from tests.support.server import LiveServer, make_server
from tests.support.spaces import push_fixture, wait_stage

HARDWARE = HardwareSpec(cpu=1.0, memory_mb=256, pids=64, disk_mb=64)
TOOLS = ("prlimit", "bwrap", "nsenter", "sh", "setpriv")
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "Vb3xQk1pZ2Vxd3J0eXVpb3Bhc2RmZ2hqa2w7enhjdmJubTEyMzQ1\n-----END PRIVATE KEY-----")  # fmt: skip
TOKEN = "sk-live-4f9a1c7e2b8d6f3a"
# Serves its own environment and uid as JSON; prints its secrets the ways apps do, then serves.
APP = textwrap.dedent("""\
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    token, pem = os.environ.get("API_TOKEN", ""), os.environ.get("PEM_KEY", "")
    print("token is", token)
    print(pem)
    print("repr:", repr(pem))
    print("config", json.dumps({"key": pem, "token": token}))
    sys.stderr.write("stderr token=" + token + "\\n")
    print("no newline at the end, then the token " + token, end="", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"env": dict(os.environ), "uid": os.getuid()}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
""")
PRELOAD_C = '#include <stdio.h>\n__attribute__((constructor)) static void hit(void) { FILE *f = fopen("MARKER", "w"); if (f) fclose(f); }\n'


def _world_readable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.parent.name == "bin" else 0o644)
    for parent in root.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        parent.chmod(parent.stat().st_mode | 0o755)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("launcher-venv") / "stdlib"
    subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", "/usr/bin/python3", str(path)], check=True)
    _world_readable(path.parent)
    return path


def evil_source(root: Path, markers: Path) -> Path:
    """An app whose repo carries bin/<tool> scripts that leave a marker (as whoever runs them), then hide."""
    src = root / "src"
    (src / "bin").mkdir(parents=True)
    (src / "app.py").write_text(APP)
    for tool in TOOLS:
        (src / "bin" / tool).write_text(f"#!/bin/sh\nid -u > {markers}/{tool}\nexec /usr/bin/{tool} \"$@\"\n")
    _world_readable(src)
    return src


async def get_json(endpoint: Endpoint) -> dict[str, object]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(endpoint.url) as r:
        return dict(await r.json())


@pytest.fixture
async def runtime_for(tmp_path: Path) -> AsyncIterator[list[LocalRuntime]]:
    made: list[LocalRuntime] = []
    yield made
    for runtime in made:
        for status in await runtime.list():
            await runtime.remove(status.name)


@pytest.mark.parametrize("mode", ["bwrap", "none"])
async def test_path_and_ld_preload_never_reach_the_root_launcher(mode: str, tmp_path: Path, venv: Path,
                                                                  runtime_for: list[LocalRuntime]) -> None:  # fmt: skip
    if mode == "bwrap" and not sandbox_status().available:
        pytest.skip(f"sandbox unavailable: {sandbox_status().reason}")
    markers = tmp_path / "markers"
    markers.mkdir()
    markers.chmod(0o777)  # even the app's uid could write here: only a host-side run can reach this path
    src = evil_source(tmp_path, markers)
    preload = src / "hit.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(preload), "-x", "c", "-"], check=True,
                   input=PRELOAD_C.replace("MARKER", str(markers / "preload")), text=True)  # fmt: skip
    preload.chmod(0o755)
    env = {"PATH": f"bin:{src}/bin:/usr/sbin:/usr/bin:/bin", "LD_PRELOAD": str(preload),
           "LD_LIBRARY_PATH": str(src), "PYTHONPATH": str(src), "MY_SETTING": "kept"}  # fmt: skip
    runtime = LocalRuntime(tmp_path / "state", sandbox=mode)  # type: ignore[arg-type]
    runtime_for.append(runtime)
    spec = InstanceSpec(name="evil", space_id="mallory/evil", env=env, hardware=HARDWARE,
                        artifact=VenvArtifact(venv, src, ("python", "app.py"), 7860))  # fmt: skip
    endpoint = await runtime.start(spec)
    assert await wait_healthy(endpoint, timeout=60), (await runtime.status("evil")).message
    seen = await get_json(endpoint)
    app_env = seen["env"]
    assert isinstance(app_env, dict)
    assert sorted(p.name for p in markers.iterdir()) == []  # no tool from the repo ran, not even as the app
    assert app_env["PATH"] == f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"  # the platform's PATH, not the space's
    assert "LD_PRELOAD" not in app_env and "LD_LIBRARY_PATH" not in app_env
    app_dir = "/home/user/app" if mode == "bwrap" else str(src)
    assert app_env["PYTHONPATH"] == app_dir  # the runtime's own value (the hosted one), never the space's
    assert app_env["MY_SETTING"] == "kept"
    log = (runtime.instances / "evil" / "app.log").read_text()
    assert "ignored environment names the platform owns: LD_LIBRARY_PATH, LD_PRELOAD, PATH, PYTHONPATH" in log
    if mode == "bwrap":
        assert isinstance(seen["uid"], int) and seen["uid"] >= 100_000


async def test_secrets_printed_by_an_app_never_reach_app_log_on_disk(tmp_path: Path, venv: Path,
                                                                     runtime_for: list[LocalRuntime]) -> None:  # fmt: skip
    mode = "bwrap" if sandbox_status().available else "none"
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text(APP)
    _world_readable(src)
    runtime = LocalRuntime(tmp_path / "state", sandbox=mode)  # type: ignore[arg-type]
    runtime_for.append(runtime)
    spec = InstanceSpec(name="leaky", space_id="alice/leaky", env={"API_TOKEN": TOKEN, "PEM_KEY": PEM, "VISIBLE": "yes"},
                        secret_keys=frozenset({"API_TOKEN", "PEM_KEY"}), hardware=HARDWARE,
                        artifact=VenvArtifact(venv, src, ("python", "app.py"), 7860))  # fmt: skip
    endpoint = await runtime.start(spec)
    assert await wait_healthy(endpoint, timeout=60), (await runtime.status("leaky")).message
    await runtime.stop("leaky")  # the relay writes what is left (the unterminated last line) when output ends
    disk = b"".join(p.read_bytes() for p in (runtime.instances / "leaky").glob("app.log*")).decode()
    assert "token is ***" in disk and "stderr token=***" in disk and "then the token ***" in disk
    forms = [TOKEN, PEM, repr(PEM)[1:-1], json.dumps(PEM)[1:-1], *[line for line in PEM.splitlines() if len(line) > 20]]
    leaked = [form for form in forms if form in disk]
    assert not leaked, f"secret forms on disk: {leaked}\n{disk}"
    assert "BEGIN PRIVATE KEY" not in disk and "MIIEvQIBADAN" not in disk
    streamed = "\n".join([line async for line in runtime.logs("leaky", follow=False)])
    assert TOKEN not in streamed and "***" in streamed


# ---------------------------------------------------------------- through a real server
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("launcher")).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def mallory(server: LiveServer) -> Identity:
    return Identity("mallory", server.create_user("mallory"))


def _api(server: LiveServer, who: Identity, path: str, body: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/spaces/{path}", json=body, headers=who.headers, timeout=30)


def _static_files(front_matter: str = "") -> dict[str, str]:
    return {"README.md": f"---\nsdk: static\n{front_matter}---\n", "index.html": "<h1>served</h1>"}


@pytest.mark.parametrize(("kind", "key"), [("variables", "LD_PRELOAD"), ("secrets", "PATH"), ("variables", "SPACE_ID"),
                                            ("secrets", "SPACES_ZERO_GPU"), ("variables", "HOME")])  # fmt: skip
def test_reserved_names_are_refused_by_the_api(server: LiveServer, mallory: Identity, kind: str, key: str) -> None:
    name = f"api-{key.lower().replace('_', '-')}"
    create_space(server, mallory, name)
    response = _api(server, mallory, f"mallory/{name}/{kind}", {"key": key, "value": "/tmp/x.so"})
    assert response.status_code == 400, response.text
    assert f"{key} is reserved" in response.text and "Use another name" in response.text, response.text
    assert _api(server, mallory, f"mallory/{name}/{kind}", {"key": f"MY_{key}", "value": "v"}).status_code == 200


def test_front_matter_env_path_is_a_config_error(server: LiveServer, mallory: Identity, tmp_path: Path) -> None:
    push_fixture(server, tmp_path, _static_files("env:\n  PATH: bin:/usr/bin:/bin\n"), "mallory", "fm-path", str(mallory.token))
    state = wait_stage(server, "mallory/fm-path", {"CONFIG_ERROR", "BUILD_ERROR", "RUNNING", "RUNTIME_ERROR"})
    assert state["stage"] == "CONFIG_ERROR", state
    assert "PATH is reserved" in json.dumps(state), state


def test_a_stored_path_variable_is_skipped_and_the_app_runs(server: LiveServer, mallory: Identity, tmp_path: Path) -> None:
    """PATH/LD_PRELOAD rows stored before the rule (written straight into the database) are skipped: the app
    (a static space: the same launcher runs its file server) starts and no tool from its repo runs."""
    markers = tmp_path / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    create_space(server, mallory, "stored-path")
    with sqlite3.connect(server.data_dir / "spaceport.db") as db:
        (space_id,) = db.execute("select id from spaces where name = 'stored-path'").fetchone()
        for key, value in (("PATH", "bin:/usr/bin:/bin"), ("LD_PRELOAD", "/nonexistent/hit.so")):
            db.execute("insert into variables (space_id, key, value, updated_at) values (?, ?, ?, '2026-01-01 00:00:00')",
                       (space_id, key, value))  # fmt: skip
    tree = evil_source(tmp_path / "tree", markers)  # executable bin/<tool> scripts
    for name, text in _static_files().items():
        (tree / name).write_text(text)
    push_fixture(server, tmp_path, str(tree), "mallory", "stored-path", str(mallory.token))
    assert wait_stage(server, "mallory/stored-path", {"RUNNING", "RUNTIME_ERROR", "BUILD_ERROR"})["stage"] == "RUNNING"
    app = host_get(server, "mallory-stored-path", "/index.html")
    assert app.status_code == 200 and "served" in app.text, app.text
    assert sorted(p.name for p in markers.iterdir()) == []
    assert "ignoring variable/secret PATH is reserved" in server.logs()
