"""Issue 18 items 1 and 5, as an attacker with an ordinary account: builds run owner code (in-tree build
backends, .pth files, requirement lines) and must stay contained.

a) `requirements.txt` = `./pkg` with an in-tree backend (`backend-path = ["."]`): it runs as the owner's
   unprivileged build uid in bubblewrap, sees neither the platform key nor the controller's code nor
   other spaces, cannot write outside its build, and reaches no host or direct internet address.
b) requirement lines pointing outside the repo (`-r <data dir>/secret.key`, ...) are refused before
   anything runs, naming the file and line; the key never reaches the build log.
c) owner A's `./lib` (with a .pth that runs code) is never reused for owner B with the same text, and
   A's build cannot write where B's builds read (B's uv cache, the venvs dir, root's uv cache).
All with real bubblewrap, real uv and (for the end-to-end test) a real `spaceport serve`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from builder.artifact import VenvArtifact
from builder.build import build
from builder.errors import CONFIG_ERROR, BuildFailure
from builder.venv import owner_cache
from controller.config import Settings
from controller.runtimes.buildbox import (
    BubblewrapBuildSandbox,
    BuildBoxConfig,
    build_box_config,
    build_sandbox_status,
    open_build_sandbox,
)
from tests.support.server import LiveServer, make_server
from tests.support.spaces import push_fixture, wait_stage
from tests.support.tiers import missing

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pl4tf0rm-s3cr3t-" + uuid.uuid4().hex
STATIC = "---\nsdk: static\nstartup_duration_timeout: 1m\n---\n"

BACKEND = r'''
import base64, hashlib, json, os, socket, zipfile
HERE = os.path.dirname(os.path.abspath(__file__))
T = json.load(open(os.path.join(HERE, "targets.json")))

def _read(p):
    try:
        with open(p) as f:
            return "READ:" + f.read(64)
    except Exception as e:
        return type(e).__name__

def _write(p):
    try:
        with open(p, "w") as f:
            f.write("pwned")
        return "WROTE"
    except Exception as e:
        return type(e).__name__

def _connect(h, p):
    try:
        socket.create_connection((h, p), timeout=3).close()
        return "CONNECTED"
    except Exception as e:
        return type(e).__name__

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = T["name"]
    evidence = {"uid": os.getuid(), "read": {p: _read(p) for p in T["read"]},
                "write": {p: _write(p) for p in T["write"]},
                "connect": {f"{h}:{p}": _connect(h, p) for h, p in T["connect"]}}
    dist = f"{name}-1.0.dist-info"
    files = {f"{name}_evidence.json": json.dumps(evidence), **T.get("extra", {}),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: evil\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    def digest(text):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record = "".join(f"{p},{digest(t)},{len(t.encode())}\n" for p, t in files.items()) + f"{dist}/RECORD,,\n"
    if T.get("evidence_out"):
        with open(T["evidence_out"], "w") as out:
            json.dump(evidence, out)
    wheel = f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as z:
        for p, t in files.items():
            z.writestr(p, t)
        z.writestr(f"{dist}/RECORD", record)
    return wheel
'''
PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "evil_backend"\nbackend-path = ["."]\n'


def host_ip() -> str:
    """An address of this machine other than loopback (the one routes to the internet leave from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.123", 9))
        return str(sock.getsockname()[0])


@pytest.fixture(scope="module")
def sandboxed() -> None:
    status = build_sandbox_status()
    if not status.available:
        missing(f"build sandbox unavailable: {status.reason}")


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    """A TCP port open on the host's own address: builds must not reach it."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(8)
        yield host_ip(), int(sock.getsockname()[1])


def package(root: Path, name: str, targets: Mapping[str, object]) -> None:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "evil_backend.py").write_text(BACKEND)
    (root / "targets.json").write_text(json.dumps({"name": name, **targets}))


def space_with_package(path: Path, pkg_dir: str, name: str, targets: Mapping[str, object]) -> Path:
    path.mkdir(parents=True)
    (path / "README.md").write_text(STATIC)
    (path / "index.html").write_text("<h1>hi</h1>")
    (path / "requirements.txt").write_text(f"./{pkg_dir}\n")
    package(path / pkg_dir, name, targets)
    return path


def evidence(venv: Path, name: str) -> dict[str, object]:
    found = list(venv.glob(f"lib/python*/site-packages/{name}_evidence.json"))
    assert found, f"the backend did not run: nothing installed in {venv}"
    return dict(json.loads(found[0].read_text()))


class Site:
    """A data dir with the platform key, another owner's space source, and the settings builds use."""

    def __init__(self, tmp: Path) -> None:
        self.settings = Settings(data_dir=tmp / "data")
        self.data = self.settings.data_dir
        self.data.mkdir(parents=True)
        self.key = self.data / "secret.key"
        self.key.write_text(SECRET)
        self.cache = self.settings.artifacts_dir
        self.other_source = self.cache / "sources" / "bob" / "private" / "abc" / "app.py"
        self.other_source.parent.mkdir(parents=True)
        self.other_source.write_text("BOB_PRIVATE_CODE = 1\n")
        self.outside = tmp / "outside"
        self.outside.mkdir()

    def build(self, source: Path, owner: str, log: list[str]) -> VenvArtifact:
        with open_build_sandbox(build_box_config(self.settings), owner, log.append) as box:
            artifact = build(source, kind="venv", cache_dir=self.cache, log=log.append, owner=owner, sandbox=box)
        assert isinstance(artifact, VenvArtifact)
        return artifact


def test_a_in_tree_backend_runs_confined_as_unprivileged_uid(sandboxed: None, tmp_path: Path,
                                                               listener: tuple[str, int]) -> None:
    site = Site(tmp_path)
    bob_cache = owner_cache(site.cache, "bob")
    bob_cache.mkdir(parents=True)
    (bob_cache / "wheel.txt").write_text("bob's cached wheel")
    reads = [str(site.key), str(ROOT / "controller" / "config.py"), str(site.other_source),
             str(bob_cache / "wheel.txt"), str(Path.home() / ".cache" / "uv" / "CACHEDIR.TAG"), "/etc/shadow"]
    writes = [str(site.data / "pwned"), str(site.outside / "pwned"), str(site.cache / "venvs" / "pwned"),
              str(bob_cache / "pwned"), str(site.cache / "pwned")]
    connect = [list(listener), ["pypi.org", 443], ["151.101.0.223", 443], ["10.232.0.1", 22]]
    source = space_with_package(tmp_path / "space", "pkg", "evil", {"read": reads, "write": writes, "connect": connect})
    log: list[str] = []
    artifact = site.build(source, "mallory", log)
    seen = evidence(artifact.venv, "evil")
    assert seen["uid"] not in (0, os.getuid()) and int(str(seen["uid"])) >= 100_000, seen
    for path, outcome in dict(seen["read"]).items():  # type: ignore[call-overload]
        assert not str(outcome).startswith("READ:"), f"the build read {path}: {outcome}"
    for path, outcome in dict(seen["write"]).items():  # type: ignore[call-overload]
        assert outcome != "WROTE" and not Path(path).exists(), f"the build wrote {path}"
    for target, outcome in dict(seen["connect"]).items():  # type: ignore[call-overload]
        assert outcome != "CONNECTED", f"the build reached {target}"
    assert SECRET not in "\n".join(log)
    assert any(line.startswith("build sandbox: bubblewrap, uid ") for line in log)
    # the finished venv is sealed: root-owned, writable by no build uid
    for entry in [artifact.venv, *artifact.venv.rglob("*")]:
        info = entry.lstat()
        assert info.st_uid == 0, entry
        assert stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o022, entry


@pytest.mark.parametrize("line", [
    "-r {key}", "-c {key}", "-e {data}", "../data/secret.key", "file://{key}", "evil @ file://{data}",
    "--index-url file://{data}", "-f {data}", "--extra-index-url {data}",
])  # fmt: skip
def test_b_outside_pointing_requirement_lines_are_refused_before_anything_runs(sandboxed: None, tmp_path: Path,
                                                                                line: str) -> None:
    site = Site(tmp_path)
    source = tmp_path / "space"
    source.mkdir()
    (source / "README.md").write_text(STATIC)
    (source / "index.html").write_text("hi")
    text = line.format(key=site.key, data=site.data)
    (source / "requirements.txt").write_text(f"six\n{text}\n")
    log: list[str] = []
    with pytest.raises(BuildFailure) as info:
        site.build(source, "mallory", log)
    assert info.value.stage == CONFIG_ERROR
    assert info.value.message.startswith("requirements.txt line 2 ") and "repo" in info.value.message
    assert SECRET not in info.value.message and SECRET not in "\n".join(log)
    assert not any(line.startswith(("creating environment", "Using CPython")) for line in log)  # nothing ran
    assert not (site.cache / "venvs").exists() or not any((site.cache / "venvs").iterdir())


def test_c_local_package_env_is_never_reused_across_owners(sandboxed: None, tmp_path: Path) -> None:
    site = Site(tmp_path)
    pth = {"alice_hook.pth": "import os; open(os.environ.get('HOOK_OUT', '/dev/null'), 'w').write('alice ran')\n"}
    bob_cache = owner_cache(site.cache, "bob")
    alice_writes = [str(bob_cache / "CACHEDIR.TAG"), str(bob_cache / "planted"), str(site.cache / "venvs" / "planted")]
    alice = space_with_package(tmp_path / "alice", "lib", "lib", {"read": [], "write": alice_writes, "connect": [],
                                                                   "extra": pth})
    bob = space_with_package(tmp_path / "bob", "lib", "lib", {"read": [], "write": [], "connect": []})
    assert (alice / "requirements.txt").read_text() == (bob / "requirements.txt").read_text()
    bob_first = site.build(bob, "bob", [])  # bob's cache exists before alice's build tries to plant into it
    alice_log: list[str] = []
    alice_env = site.build(alice, "alice", alice_log)
    writes = dict(evidence(alice_env.venv, "lib")["write"])  # type: ignore[call-overload]
    assert all(outcome != "WROTE" for outcome in writes.values()), writes
    assert not (bob_cache / "planted").exists() and not (site.cache / "venvs" / "planted").exists()
    bob_log: list[str] = []
    bob_env = site.build(bob, "bob", bob_log)
    assert bob_env.venv == bob_first.venv != alice_env.venv
    assert not list(bob_env.venv.glob("lib/python*/site-packages/alice_hook.pth"))
    assert list(alice_env.venv.glob("lib/python*/site-packages/alice_hook.pth"))
    out = tmp_path / "hook-out"
    done = subprocess.run([str(bob_env.venv / "bin" / "python"), "-c", "print('ok')"], env={"HOOK_OUT": str(out)},
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ok" and not out.exists()  # alice's .pth never runs in bob's environment
    # each owner's uv cache is its own, unreadable by the other's build uid
    caches = {owner: owner_cache(site.cache, owner).stat() for owner in ("alice", "bob")}
    assert caches["alice"].st_uid != caches["bob"].st_uid
    assert all(not info.st_mode & 0o077 for info in caches.values())


def test_c_a_seeded_owner_cache_cannot_change_the_trusted_seed(sandboxed: None, tmp_path: Path) -> None:
    site = Site(tmp_path)
    seed = tmp_path / "seed"
    (seed / "archive-v0" / "abc").mkdir(parents=True)
    (seed / "archive-v0" / "abc" / "mod.py").write_text("TRUSTED = 1\n")
    (seed / "archive-v0" / ".lock").write_text("")
    cache = owner_cache(site.cache, "mallory")
    targets = {"read": [], "connect": [], "write": [str(cache / "archive-v0" / "abc" / "mod.py"), str(seed / "planted")]}
    source = space_with_package(tmp_path / "space", "pkg", "evil", targets)
    with open_build_sandbox(build_box_config(site.settings), "mallory", lambda _line: None) as box:
        artifact = build(source, kind="venv", cache_dir=site.cache, log=lambda _line: None, owner="mallory",
                         sandbox=box, uv_seed=seed)
    assert isinstance(artifact, VenvArtifact)
    writes = dict(evidence(artifact.venv, "evil")["write"])  # type: ignore[call-overload]
    assert all(outcome == "PermissionError" or outcome == "FileNotFoundError" for outcome in writes.values()), writes
    assert (seed / "archive-v0" / "abc" / "mod.py").read_text() == "TRUSTED = 1\n"
    assert (cache / "archive-v0" / "abc" / "mod.py").stat().st_ino == (seed / "archive-v0" / "abc" / "mod.py").stat().st_ino
    assert (seed / "archive-v0" / "abc" / "mod.py").stat().st_uid == 0 and not (seed / "planted").exists()


def _seed_tree(seed: Path) -> dict[Path, tuple[int, int]]:
    """A small uv-like cache; returns each file's (uid, mode) as the trusted seed has it."""
    for rel, text in {"CACHEDIR.TAG": "Signature", ".lock": "", "sdists-v11/.git": "", "archive-v0/abc/mod.py": "T = 1\n",
                      "archive-v0/abc/bin/tool": "#!/bin/sh\n", "wheels-v8/pypi/six/1.0-py3-none-any.lock": ""}.items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(text)
    (seed / "archive-v0" / "abc" / "bin" / "tool").chmod(0o755)
    (seed / "wheels-v8" / "pypi" / "six" / "1.0-py3-none-any.lock").chmod(0o666)  # as uv makes its lock files
    return {f: (f.lstat().st_uid, f.lstat().st_mode) for f in seed.rglob("*") if f.is_file()}


def _box(tmp_path: Path, uid: int) -> BubblewrapBuildSandbox:
    config = BuildBoxConfig(registry=tmp_path / "reg", identity_dir=tmp_path / "ids", protected=(),
                            key_prefix=str(tmp_path), allow_hosts=(), network=False)
    return BubblewrapBuildSandbox(config, "mallory", lambda _line: None, uid=uid, _started=True)


def test_c_preparing_an_owner_cache_again_never_changes_the_seeds_files(sandboxed: None, tmp_path: Path) -> None:
    """The CI failure of stop 22: a cache prepared again (another build uid, or a second build racing the
    first) chowned every file, hardlinks of the seed included, so the seed itself became a build uid's and
    the next owner's build could not open its own cache (`sdists-v11/.git: Permission denied`)."""
    seed, cache = tmp_path / "seed", tmp_path / "cache"
    trusted = _seed_tree(seed)
    cache.mkdir()
    _box(tmp_path, 123_401).prepare(cache, seed=seed)
    _box(tmp_path, 123_402).prepare(cache, seed=seed)  # the same cache, another uid: re-prepared in place
    assert {f: (f.lstat().st_uid, f.lstat().st_mode) for f in trusted} == trusted
    assert (cache / "archive-v0" / "abc" / "mod.py").stat().st_ino == (seed / "archive-v0" / "abc" / "mod.py").stat().st_ino
    for private in (cache / ".lock", cache / "sdists-v11" / ".git", cache / "CACHEDIR.TAG",
                    cache / "wheels-v8" / "pypi" / "six" / "1.0-py3-none-any.lock"):  # no lock inode shared across owners
        assert private.lstat().st_uid == 123_402 and private.lstat().st_nlink == 1, private
    assert cache.lstat().st_uid == 123_402 and (cache / "sdists-v11").lstat().st_uid == 123_402


def test_c_concurrent_builds_of_one_owner_both_get_a_whole_cache(sandboxed: None, tmp_path: Path) -> None:
    seed, cache = tmp_path / "seed", tmp_path / "cache"
    trusted = _seed_tree(seed)
    for n in range(300):  # enough files that the first seeding is still running when the second starts
        (seed / "archive-v0" / f"pkg{n}").mkdir()
        (seed / "archive-v0" / f"pkg{n}" / "m.py").write_text("x = 1\n")
    cache.mkdir()
    boxes = [_box(tmp_path, 123_403), _box(tmp_path, 123_403)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda box: box.prepare(cache, seed=seed), boxes))
    assert {f: (f.lstat().st_uid, f.lstat().st_mode) for f in trusted} == trusted
    assert (cache / "sdists-v11" / ".git").lstat().st_uid == 123_403
    assert len(list((cache / "archive-v0").iterdir())) == 301


def test_c_a_polluted_seed_file_is_copied_not_trusted_in_place(sandboxed: None, tmp_path: Path) -> None:
    seed, cache = tmp_path / "seed", tmp_path / "cache"
    _seed_tree(seed)
    polluted = seed / "archive-v0" / "abc" / "mod.py"
    os.chown(polluted, 4242, 4242)  # written by some build uid: not the trusted seed any more
    cache.mkdir()
    _box(tmp_path, 123_404).prepare(cache, seed=seed)
    mine = cache / "archive-v0" / "abc" / "mod.py"
    assert mine.stat().st_ino != polluted.stat().st_ino and mine.stat().st_uid == 123_404
    assert polluted.stat().st_uid == 4242 and mine.read_text() == "T = 1\n"
    tool = cache / "archive-v0" / "abc" / "bin" / "tool"
    assert tool.stat().st_uid == 0 and tool.stat().st_mode & 0o111  # untouched hardlink, still executable


# ---------------------------------------------------------------- end to end through `spaceport serve`
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    status = build_sandbox_status()
    if not status.available:
        missing(f"build sandbox unavailable: {status.reason}")
    srv = make_server(tmp_path_factory.mktemp("buildbox")).start(timeout=180)  # a loaded 2-core VM starts slowly
    yield srv
    srv.close()


def build_log(server: LiveServer, space: str, token: str) -> str:
    response = httpx.get(f"{server.url}/api/spaces/{space}/logs/build", params={"follow": "false"},
                         headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_pushed_spaces_build_in_the_sandbox_and_outside_lines_are_config_errors(server: LiveServer,
                                                                                tmp_path: Path) -> None:
    token = server.create_user("mallory")
    key = server.data_dir / "secret.key"
    key_text = key.read_text()
    targets = {"read": [str(key), str(server.data_dir / "spaceport.db")], "write": [str(server.data_dir / "pwned")],
               "connect": []}
    files = {"README.md": STATIC, "index.html": "<h1>evil</h1>", "requirements.txt": "./pkg\n",
             "pkg/pyproject.toml": PYPROJECT, "pkg/evil_backend.py": BACKEND,
             "pkg/targets.json": json.dumps({"name": "evil", **targets})}
    push_fixture(server, tmp_path, files, "mallory", "evil", token)
    state = wait_stage(server, "mallory/evil", {"RUNNING", "BUILD_ERROR", "CONFIG_ERROR", "RUNTIME_ERROR"})
    assert state["stage"] == "RUNNING", state
    log = build_log(server, "mallory/evil", token)
    assert "build sandbox: bubblewrap, uid " in log and key_text not in log
    venvs = list((server.data_dir / "artifacts" / "venvs").glob("*/lib/python*/site-packages/evil_evidence.json"))
    assert venvs
    seen = json.loads(venvs[0].read_text())
    assert seen["uid"] >= 100_000 and not any(str(v).startswith("READ:") for v in seen["read"].values()), seen
    assert not (server.data_dir / "pwned").exists()

    files = {"README.md": STATIC, "index.html": "x", "requirements.txt": f"# deps\n-r {key}\n"}
    push_fixture(server, tmp_path, files, "mallory", "leak", token)
    state = wait_stage(server, "mallory/leak", {"RUNNING", "BUILD_ERROR", "CONFIG_ERROR", "RUNTIME_ERROR"})
    assert state["stage"] == "CONFIG_ERROR", state
    message = str(state.get("errorMessage"))
    assert "requirements.txt line 2" in message and "inside the repository" in message, state
    assert key_text not in message and key_text not in build_log(server, "mallory/leak", token)


# ---------------------------------------------------------------- the pieces, directly
def test_egress_proxy_tunnels_only_connect_to_allowed_index_hosts(tmp_path: Path) -> None:
    from controller.runtimes.egress import EgressProxy, allowed

    assert allowed("pypi.org", ["pypi.org"]) and allowed("Files.PythonHosted.org.", [".pythonhosted.org"])
    assert not allowed("evil-pypi.org", ["pypi.org"]) and not allowed("pypi.org.evil.com", ["pypi.org"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    lines: list[str] = []
    proxy = EgressProxy("127.0.0.1", port, ("pypi.org",), lines.append).start()
    try:
        def ask(request: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(request)
                return sock.recv(4096)

        assert ask(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n").startswith(b"HTTP/1.1 403")
        assert ask(b"CONNECT pypi.org:22 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
        assert ask(b"GET http://pypi.org/simple/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n").startswith(b"HTTP/1.1 403")
        assert ask(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        proxy.stop()
    assert any("example.com:443 is not an allowed package index host" in line and "SPACEPORT_BUILD_EGRESS_ALLOW" in line
               for line in lines), lines


def test_build_argv_uses_absolute_launchers_a_fixed_host_env_and_never_binds_protected(tmp_path: Path) -> None:
    from controller.runtimes.buildbox import (
        BubblewrapBuildSandbox,
        BuildBoxConfig,
        bwrap_build_argv,
        check_binds,
    )

    data = tmp_path / "data"
    protected = (data / "secret.key", data / "repos")
    config = BuildBoxConfig(registry=tmp_path / "reg", identity_dir=tmp_path / "ids", protected=protected,
                            key_prefix=str(data), allow_hosts=("pypi.org",), network=False)
    box = BubblewrapBuildSandbox(config, "mallory", lambda _line: None, uid=123_456, _started=True)
    venv, src = tmp_path / "art" / "venv", tmp_path / "art" / "src"
    argv, env = box.wrap(["/x/uv", "pip", "install"], writable={venv: venv}, readonly=[src],
                         env={"PATH": "/usr/bin", "LD_PRELOAD": "/evil.so"}, cwd=src)
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}  # the host launchers' env is fixed
    assert argv[0].startswith("/") and "/usr/bin/bwrap" in argv and "/usr/bin/setpriv" in argv
    assert argv[argv.index("--clearenv") + 1:argv.index("--clearenv") + 4] == ["--setenv", "LD_PRELOAD", "/evil.so"]
    assert "--reuid=123456" in argv and "--no-new-privs" in argv and "--die-with-parent" in argv
    assert ["--bind", str(venv), str(venv)] == argv[argv.index("--bind"):argv.index("--bind") + 3]
    assert str(data / "secret.key") not in argv and argv[-3:] == ["/x/uv", "pip", "install"]
    with pytest.raises(RuntimeError):
        check_binds([Path("/")], protected)
    with pytest.raises(RuntimeError):
        check_binds([data / "repos" / "x"], protected)
    masked = bwrap_build_argv(1, tmp_path, {data: data}, [], protected, data, {}, ["true"], config.limits)
    assert "--tmpfs" in masked and str(data / "repos") in masked  # protected paths inside a bind are masked


def test_build_reaches_only_allowed_index_hosts(sandboxed: None, tmp_path: Path) -> None:
    site = Site(tmp_path)
    source = tmp_path / "space"
    source.mkdir()
    (source / "README.md").write_text(STATIC)
    (source / "index.html").write_text("hi")
    (source / "requirements.txt").write_text("--index-url https://example.com/simple\nsix\n")
    log: list[str] = []
    with pytest.raises(BuildFailure) as info:
        site.build(source, "mallory", log)
    assert "installing requirements.txt failed" in info.value.message
    assert any("build egress refused: example.com:443 is not an allowed package index host" in line for line in log)


# ---------------------------------------------------------------- docker runtime: image builds
DOCKERFILE = """FROM python:3.11
RUN useradd -m -u 1000 user
USER 1000
WORKDIR /home/user/app
COPY --chown=1000:1000 . .
RUN python -m pip wheel --no-deps -w /tmp/wheels ./pkg && echo "EVIDENCE $(cat /tmp/evidence.json)"
RUN echo "MEMORY $(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
RUN python -c "import urllib.request as u; print('INDEX_%d' % u.urlopen('https://pypi.org/simple/six/', timeout=60).status)"
"""


@pytest.fixture
def docker_client(docker_host: str) -> Iterator[object]:
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=600)
    yield client
    client.close()


def test_image_build_runs_backend_in_a_limited_container_off_the_host(docker_client: object, tmp_path: Path,
                                                                       listener: tuple[str, int]) -> None:
    from builder.bootstrap import bootstrap_images
    from controller.runtimes.buildbox import build_isolation

    bootstrap_images(docker_client, progress=lambda _line: None)
    settings = Settings(data_dir=tmp_path / "data", runtime="docker", build_memory_mb=1536)
    settings.data_dir.mkdir(parents=True)
    key = settings.data_dir / "secret.key"
    key.write_text(SECRET)
    targets = {"read": [str(key), str(ROOT / "controller" / "config.py")], "write": [], "evidence_out": "/tmp/evidence.json",
               "connect": [list(listener)]}
    source = tmp_path / "space"
    source.mkdir()
    (source / "README.md").write_text("---\nsdk: docker\napp_port: 7860\n---\n")
    (source / "Dockerfile").write_text(DOCKERFILE)
    package(source / "pkg", "evil", targets)
    log: list[str] = []
    tag = f"spaceport/test-buildbox-evil:{uuid.uuid4().hex[:8]}"
    with build_isolation(settings, "mallory", log.append, "image", docker_client) as isolation:
        assert isolation.network == settings.build_network and isolation.container_limits
        build(source, kind="image", cache_dir=settings.artifacts_dir, log=log.append, tag=tag, client=docker_client,
              network=isolation.network, container_limits=isolation.container_limits, no_cache=True)
    docker_client.images.remove(tag, force=True)  # type: ignore[attr-defined]
    text = "".join(log)  # docker streams output in chunks: a line may arrive in pieces
    assert "EVIDENCE {" in text, log[-20:]
    seen, _ = json.JSONDecoder().raw_decode(text, text.rindex("EVIDENCE {") + len("EVIDENCE "))
    assert seen["uid"] == 1000, seen
    assert not any(str(v).startswith("READ:") for v in seen["read"].values()), seen
    assert all(v != "CONNECTED" for v in seen["connect"].values()), seen  # the host's own address is off limits
    assert f"MEMORY {1536 * 1024 * 1024}" in text
    assert "INDEX_200" in "".join(log), log[-12:]  # package indexes (and DNS) stay reachable
    assert SECRET not in "\n".join(log)

    (source / "requirements.txt").write_text(f"-r {key}\n")
    with pytest.raises(BuildFailure) as info:
        build(source, kind="image", cache_dir=settings.artifacts_dir, log=log.append, tag=tag, client=docker_client)
    assert info.value.stage == CONFIG_ERROR and info.value.message.startswith("requirements.txt line 1 ")
    assert SECRET not in info.value.message
