"""Issue 18 item 6: a space's secrets never reach a public place, in any form they are printed in.

As an attacker with no account: a public space whose app prints its secrets (a token and a multi-line
PEM-like key, as-is, as repr(), as JSON, base64, split over two writes) and crashes. Its runtime
errorMessage (read anonymously with huggingface_hub), its web pages, its build and run log streams, the
`spaceport logs` CLI, the database (Space/Instance/Build messages, log lines, the SQLite file itself) and
the server's own log never contain them. A build whose requirements name a secret value fails without
showing it, and secrets are never build arguments. On the local and the docker runtime.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi
from sqlalchemy import select

from controller.config import Settings
from controller.db.models import Build, Instance
from controller.domain.masking import MASK
from controller.services import accounts, instances, settings_vars, spaces
from controller.services.buildlogs import BuildLogWriter, read_lines, secret_masker
from controller.services.platform import Platform
from tests.support.gitrepo import make_repo, push, remote
from tests.support.server import LiveServer, make_server
from tests.support.spaces import wait_stage

TOKEN = f"sk-live-{uuid.uuid4().hex}"
PEM_BODY = [base64.b64encode(secrets.token_bytes(48)).decode() for _ in range(4)]
PEM = "\n".join(["-----BEGIN PRIVATE KEY-----", *PEM_BODY, "-----END PRIVATE KEY-----"])
REG_TOKEN = f"zq-leak-{uuid.uuid4().hex[:20]}"  # a valid package name: the owner pasted it into requirements.txt
RUN_ID = uuid.uuid4().hex[:12]
SETTLED = {"RUNNING", "BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR"}
pytestmark = pytest.mark.timeout(600)  # the first test of a stack pays for a server, a build and a crash loop

CRASH_APP = (
    "import base64, json, os, sys\n"
    "token, key = os.environ['API_TOKEN'], os.environ['SIGNING_KEY']\n"
    "def say(*parts):\n"
    "    print(*parts, flush=True)\n"
    "say('key follows:')\n"
    "say(key)\n"
    "say('key repr:', repr(key))\n"
    "say('key json:', json.dumps({'key': key}))\n"
    "say('token:', token)\n"
    "say('token repr:', repr(token))\n"
    "say('config:', json.dumps({'token': token}))\n"
    "say('token b64:', base64.b64encode(token.encode()).decode())\n"
    "sys.stdout.write('split: ' + token[:12]); sys.stdout.flush()\n"  # one value, two writes
    "sys.stdout.write(token[12:] + '\\n'); sys.stdout.flush()\n"
    "raise RuntimeError(f'upstream refused token {token!r}')\n"
)
CRASH_FILES = {
    "local": {"README.md": "---\ntitle: Leaky\nsdk: gradio\nstartup_duration_timeout: 1m\n---\n", "app.py": CRASH_APP},
    "docker": {
        "README.md": "---\ntitle: Leaky\nsdk: docker\napp_port: 8080\nstartup_duration_timeout: 1m\n---\n",
        "Dockerfile": "FROM python:3.11-slim\nWORKDIR /app\nCOPY app.py .\nCMD [\"python\", \"app.py\"]\n",
        "app.py": CRASH_APP,
    },
}
BAD_REQS = {
    "local": {"README.md": "---\ntitle: Reqs\nsdk: gradio\n---\n", "app.py": "print('never runs')\n",
              "requirements.txt": f"{REG_TOKEN}==1.0\n"},
    "docker": {
        "README.md": "---\ntitle: Reqs\nsdk: docker\napp_port: 8080\n---\n",
        "Dockerfile": (
            "FROM python:3.11-slim\nARG PUBLIC_VAR\nARG REG_TOKEN\n"
            f"RUN echo \"build args ({RUN_ID}): var=[$PUBLIC_VAR] token=[$REG_TOKEN]\"\n"  # never a cached step
            "COPY requirements.txt .\nRUN pip install --no-index -r requirements.txt\n"
        ),
        "app.py": "print('never runs')\n", "requirements.txt": f"{REG_TOKEN}==1.0\n",
    },
}


def token_forms() -> list[str]:
    """Every form of the crash app's secrets that must never show, and pieces of them."""
    hexpart = TOKEN[len("sk-live-"):]
    forms = [TOKEN, repr(TOKEN), json.dumps(TOKEN), base64.b64encode(TOKEN.encode()).decode(), hexpart[:16], hexpart[16:]]
    forms += [repr(PEM)[1:-1], json.dumps(PEM)[1:-1]]
    for line in PEM_BODY:
        forms += [line, line[:24], line[-24:]]
    return forms


def leaks(text: str, forms: list[str] | None = None) -> list[str]:
    return [form for form in (token_forms() if forms is None else forms) if form in text]


@dataclass
class Stack:
    runtime: str
    server: LiveServer
    token: str  # alice's write token


@pytest.fixture(scope="module", params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    extra: dict[str, str] = {}
    if request.param == "docker":
        from tests.support.images import ensure_base_images

        docker_host = request.getfixturevalue("docker_host")
        ensure_base_images(docker_host)
        extra = {"SPACEPORT_RUNTIME": "docker", "SPACEPORT_DOCKER_HOST": docker_host}
    server = make_server(tmp_path_factory.mktemp(f"leaks-{request.param}"), **extra).start(timeout=180)  # a busy host
    try:
        yield Stack(request.param, server, server.create_user("alice"))
    finally:
        server.close()


def api(stack: Stack, method: str, path: str, **kw: object) -> httpx.Response:
    response = httpx.request(method, f"{stack.server.url}{path}", headers={"authorization": f"Bearer {stack.token}"},
                             timeout=60, **kw)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text[:500]
    return response


def create_space(stack: Stack, name: str, files: dict[str, str], secrets_: dict[str, str], tmp: Path) -> str:
    sdk = "docker" if "Dockerfile" in files else "gradio"
    api(stack, "POST", "/api/repos/create", json={"type": "space", "name": name, "organization": "alice", "sdk": sdk})
    for key, value in secrets_.items():
        api(stack, "POST", f"/api/spaces/alice/{name}/secrets", json={"key": key, "value": value})
    api(stack, "POST", f"/api/spaces/alice/{name}/variables", json={"key": "PUBLIC_VAR", "value": "visible"})
    push(make_repo(tmp / name, files), remote(stack.server.url, "alice", name, "alice", stack.token))
    return f"alice/{name}"


@pytest.fixture(scope="module")
def leaky(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A public space whose app prints its secrets and crashes; waits for its crash to be published."""
    space = create_space(stack, "leaky", CRASH_FILES[stack.runtime], {"API_TOKEN": TOKEN, "SIGNING_KEY": PEM},
                         tmp_path_factory.mktemp("leaky"))
    deadline = time.monotonic() + 240  # below the module's timeout: a slow loop fails with what it saw
    seen: list[str] = []
    while time.monotonic() < deadline:  # crash, restarts with backoff, then it stays failed: a stable page
        state = wait_stage(stack.server, space, {"RUNTIME_ERROR", "BUILD_ERROR", "CONFIG_ERROR"}, timeout=240)
        assert state["stage"] == "RUNTIME_ERROR", state
        if "keeps crashing" in str(state["errorMessage"]):
            return space
        message = str(state["errorMessage"])[:120]
        if not seen or seen[-1] != message:
            seen.append(message)
        time.sleep(0.2)
    log = "\n".join(line for line in stack.server.logs().splitlines() if "GET /api/spaces" not in line)
    raise AssertionError(f"{space} never settled in a crash loop; messages seen: {seen}\nserver log tail:\n{log[-4000:]}")


@pytest.fixture(scope="module")
def bad_reqs(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    space = create_space(stack, "reqs", BAD_REQS[stack.runtime], {"REG_TOKEN": REG_TOKEN}, tmp_path_factory.mktemp("reqs"))
    state = wait_stage(stack.server, space, SETTLED, timeout=400)
    assert state["stage"] == "BUILD_ERROR", state
    return space


def sse_text(stack: Stack, path: str) -> str:
    """An SSE log stream read anonymously (the spaces are public)."""
    response = httpx.get(f"{stack.server.url}{path}", params={"follow": "false"}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    return "\n".join(json.loads(line[5:])["data"] for line in response.text.splitlines() if line.startswith("data:"))


def db_texts(stack: Stack) -> dict[str, str]:
    """Every stored message and log line, and the raw bytes of the SQLite files."""
    db = stack.server.data_dir / "spaceport.db"
    with sqlite3.connect(db) as conn:
        rows = {
            "spaces.error_message": conn.execute("SELECT error_message FROM spaces").fetchall(),
            "instances.message": conn.execute("SELECT message FROM instances").fetchall(),
            "builds.error_message": conn.execute("SELECT error_message FROM builds").fetchall(),
            "build_log_lines.text": conn.execute("SELECT text FROM build_log_lines").fetchall(),
        }
    texts = {name: "\n".join(str(v) for (v,) in values if v) for name, values in rows.items()}
    for path in db.parent.glob("spaceport.db*"):
        texts[path.name] = path.read_bytes().decode("latin-1")
    return texts


# ----------------------------------------------------------------------------- a crashing app


def test_public_error_message_read_anonymously_holds_no_secret(stack: Stack, leaky: str) -> None:
    runtime = HfApi(endpoint=stack.server.url, token=False).get_space_runtime(leaky)
    message = str(runtime.raw["errorMessage"])
    assert runtime.stage == "RUNTIME_ERROR"
    assert "key follows:" in message and f"token: {MASK}" in message  # the tail with the secrets is there...
    assert leaks(message) == []  # ...masked in every form


def test_space_pages_hold_no_secret(stack: Stack, leaky: str) -> None:
    for path in ("/spaces/alice/leaky", "/spaces/alice/leaky/logs"):
        page = httpx.get(f"{stack.server.url}{path}", timeout=30)
        assert page.status_code == 200, page.text[:300]
        assert leaks(page.text) == [] and leaks(page.text.replace("&#39;", "'").replace("&#34;", '"')) == []
    assert f"token: {MASK}" in httpx.get(f"{stack.server.url}/spaces/alice/leaky", timeout=30).text


def test_log_streams_hold_no_secret(stack: Stack, leaky: str) -> None:
    run = sse_text(stack, f"/api/spaces/{leaky}/logs/run")
    assert f"token: {MASK}" in run and f"split: {MASK}" in run and "key follows:" in run
    assert leaks(run) == []
    build = sse_text(stack, f"/api/spaces/{leaky}/logs/build")
    assert "Build succeeded" in build and leaks(build) == []


def test_cli_logs_hold_no_secret(stack: Stack, leaky: str) -> None:
    out = stack.server.cli("logs", leaky, "--url", stack.server.url).stdout
    assert f"token: {MASK}" in out and leaks(out) == []


def test_database_and_server_log_hold_no_secret(stack: Stack, leaky: str) -> None:
    texts = db_texts(stack)
    assert f"token: {MASK}" in texts["spaces.error_message"]
    assert {name: found for name, text in texts.items() if (found := leaks(text))} == {}
    assert leaks(stack.server.logs()) == []


# ----------------------------------------------------------------------------- a failing build


def test_failed_build_shows_no_secret(stack: Stack, bad_reqs: str) -> None:
    forms = [REG_TOKEN, repr(REG_TOKEN), REG_TOKEN[len("zq-leak-"):]]
    build = sse_text(stack, f"/api/spaces/{bad_reqs}/logs/build")
    assert MASK in build and leaks(build, forms) == []  # the failing requirement is named, masked
    runtime = HfApi(endpoint=stack.server.url, token=False).get_space_runtime(bad_reqs)
    message = str(runtime.raw["errorMessage"])
    assert runtime.stage == "BUILD_ERROR" and MASK in message and leaks(message, forms) == []
    texts = db_texts(stack)
    assert {name: found for name, text in texts.items() if (found := leaks(text, forms))} == {}
    if stack.runtime == "docker":  # variables are build arguments, secrets never are
        assert f"build args ({RUN_ID}): var=[visible] token=[]" in build


# ----------------------------------------------------------------------------- the services, on SQLite


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform(Settings(data_dir=tmp_path / "data", secret_key="test-key"))
    plat.migrate()
    yield plat
    plat.dispose()


def crashed_instance(platform: Platform) -> str:
    """alice/demo with both secrets, a built commit and an instance row; returns the instance name."""
    with platform.tx() as session:
        user = accounts.create_user(session, "alice")
        space = spaces.create_space(session, platform.settings.repos_dir, accounts.Principal(user, "write"), "alice", "demo")
        settings_vars.set_secret(session, platform, space, settings_vars.KeyValue("API_TOKEN", TOKEN))
        settings_vars.set_secret(session, platform, space, settings_vars.KeyValue("SIGNING_KEY", PEM))
        build = Build(space_id=space.id, commit_sha="a" * 40, status="succeeded")
        session.add(build)
        session.flush()
        session.add(Instance(space_id=space.id, build_id=build.id, name="sp-alice-demo-1-1", runtime="local"))
    return "sp-alice-demo-1-1"


def test_instance_messages_are_masked_before_they_are_stored(platform: Platform) -> None:
    name = crashed_instance(platform)
    tail = f"exited with code 1\n{PEM}\ntoken {TOKEN!r}\n{json.dumps({'k': PEM})}"
    instances.mark_crashed(platform, name, f"The app exited. Last log lines:\n{tail}")
    with platform.sessions() as session:
        stored = session.scalar(select(Instance.message).where(Instance.name == name))
    assert stored is not None and f"token '{MASK}'" in stored and leaks(stored) == []
    instances.update_row(platform, name, state="failed", message=f"cannot start: {TOKEN}")
    with platform.sessions() as session:
        assert session.scalar(select(Instance.message).where(Instance.name == name)) == f"cannot start: {MASK}"


def test_secrets_are_decrypted_only_when_a_message_is_stored(platform: Platform) -> None:
    """The reconciler updates rows every few seconds: state-only updates never decrypt the space's secrets."""
    name = crashed_instance(platform)
    real = platform.cipher.decrypt
    calls: list[str] = []

    def counting(ciphertext: str) -> str:
        calls.append(ciphertext)
        return real(ciphertext)

    platform.cipher.decrypt = counting  # type: ignore[method-assign,assignment]
    instances.update_row(platform, name, state="ready", endpoint="http://127.0.0.1:1", message=None)
    instances.update_row(platform, name, state="starting", message=None)
    assert calls == []
    instances.update_row(platform, name, state="failed", message="boom")
    assert len(calls) == 2  # both secrets, once


def test_build_log_writer_and_secret_masker(platform: Platform) -> None:
    crashed_instance(platform)
    with platform.sessions() as session:
        space = spaces.find_space(session, "alice", "demo")
        assert space is not None
        masker = secret_masker(session, platform, space)
        build_id = session.scalar(select(Build.id))
    assert build_id is not None
    writer = BuildLogWriter(platform.sessions, build_id, masker)
    for line in [f"pip: {TOKEN}", *PEM.splitlines(), f"b64 {base64.b64encode(TOKEN.encode()).decode()}"]:
        writer(line)
    writer.flush()
    with platform.sessions() as session:
        stored = "\n".join(line.text for line in read_lines(session, build_id))
    assert stored.startswith(f"pip: {MASK}") and leaks(stored) == []
    assert writer.mask(f"failed: {TOKEN}") == f"failed: {MASK}"
