"""Local artifact: a uv-made venv shared by dependency hash, plus the commit's source snapshot.

The environment key hashes (owner, python version, sdk, sdk_version, requirements.txt,
pre-requirements.txt and files they include with -r/-c). A venv is built in a temp dir next to the cache
and renamed into place atomically (uv --relocatable venv), so concurrent builds never see a half-made
environment and a code-only push reuses it ("reusing environment <key>").

Owner code runs here (local packages' build backends, sdists from an index, .pth files), so nothing an
owner's build writes is ever read by another owner's build: the key includes the owner, each owner has
its own uv cache (`uv-cache/<owner digest>`), and with a `BuildSandbox` (builder/sandbox.py) every uv step
runs inside it as the owner's build identity and the finished venv is sealed (root-owned, read-only to
builds). Requirement lines pointing outside the repo are refused first (builder/requirements.py).
Without an owner (direct builder use, tests) uv's default cache is used, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import uv

from builder import bytecode, pythons, sdkdeps
from builder.artifact import VenvArtifact
from builder.buildpacks.streamlit import STREAMLIT_FLAGS
from builder.card import card_command
from builder.certs import ca_bundle
from builder.errors import BUILD_ERROR, BuildFailure
from builder.proc import Result, run_streaming
from builder.pythons import PythonSource
from builder.requirements import check_requirement_files, has_local_paths
from builder.sandbox import BuildSandbox
from builder.spaceconfig import DEFAULT_PYTHON, SpaceConfig, is_readme_card

ENV_FORMAT = 3  # bump to invalidate every cached environment (2: install plan, hosted default Python; 3: seeded pip)
MARKER = ".spaceport-env.json"
STORE = "venv-store"  # cache_dir/STORE: content-addressed inodes shared by sealed venvs (share_files)
SANDBOX_PATH = "/usr/bin:/bin"
REQUIREMENT_FILES = ("pre-requirements.txt", "requirements.txt")

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class VenvPolicy:
    """The site's choices for local environments (the controller's SPACEPORT_BUILD_* settings).

    The defaults are the hosted platform's: Python 3.10 when README.md names none, and its base packages.
    """

    default_python: str = DEFAULT_PYTHON
    base_packages: tuple[str, ...] = sdkdeps.BASE_PACKAGES
    python_source: PythonSource = dataclasses.field(default_factory=PythonSource)
    # The content-addressed store sealed venvs share (file inodes and bytecode); None: cache_dir/STORE.
    # Sites on one host (one filesystem) may share one: entries are named by content hash only.
    store: Path | None = None


def build_venv(
    source: Path,
    config: SpaceConfig,
    *,
    cache_dir: Path,
    log: Log,
    no_cache: bool = False,
    time_limit: float = 1800.0,
    cancel: threading.Event | None = None,
    ca_dir: Path | None = None,
    owner: str = "",
    sandbox: BuildSandbox | None = None,
    uv_seed: Path | None = None,
    policy: VenvPolicy | None = None,
) -> VenvArtifact:
    """Make (or reuse) `owner`'s environment for the space and return how to run it from `source`."""
    if config.sdk == "docker":
        raise BuildFailure(BUILD_ERROR, "Docker spaces need SPACEPORT_RUNTIME=docker (this server runs spaces as local processes)")
    if (source / "packages.txt").is_file():
        log("warning: packages.txt lists apt packages; they are only installed in container builds (SPACEPORT_RUNTIME=docker)")
    check_requirement_files(source)
    policy = policy or VenvPolicy()
    venvs = cache_dir / "venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    env = _uv_env(cache_dir, ca_dir)
    config, interpreter = _choose_python(config, source, pythons.discovery_env(env, cache_dir, policy.python_source),
                                         policy, log)
    files = {name for name in REQUIREMENT_FILES if (source / name).is_file()}
    plan = sdkdeps.install_plan(config, files, sdkdeps.release_for(config), policy.base_packages)
    key = environment_key(source, config, owner, sandboxed=sandbox is not None, plan=plan)
    final = venvs / key
    if no_cache:
        log("no cache (factory rebuild): building a fresh environment and refreshing downloads")
        final = venvs / f"{key}.{uuid.uuid4().hex[:8]}"
    if (final / MARKER).is_file():
        log(f"reusing environment {key}")
    else:
        log(f"creating environment {key} (python {config.python}, {config.sdk} {config.sdk_version or 'latest'})")
        for note in plan.notes:
            log(f"spaceport: {note}")
        job = _Job(source, config, env, log, time.monotonic() + time_limit, cancel, no_cache, owner, cache_dir,
                   sandbox, uv_seed, plan, interpreter, policy.store or cache_dir / STORE)
        _create(final, job)
    return VenvArtifact(
        venv=final, source=source, command=command(final, source, config), port=config.app_port,
        env=environment(config), health_path="/_stcore/health" if config.sdk == "streamlit" else "/",
    )


def environment_key(source: Path, config: SpaceConfig, owner: str = "", *, sandboxed: bool = False,
                    plan: sdkdeps.InstallPlan | None = None) -> str:
    """Hash of everything that decides the environment's contents, and whose it is.

    Local packages, URLs and sdists make the contents depend on more than the requirements text (and
    their code ran as the owner's build identity), so an environment is never shared across owners;
    nor is one built (and sealed) in the sandbox ever confused with one built without it. The install
    plan (base packages, order, constraints, the --exclude-newer date) changes the result too.
    """
    digest = hashlib.sha256()
    header: dict[str, object] = {"format": ENV_FORMAT, "python": config.python, "sdk": config.sdk,
                                 "sdk_version": config.sdk_version}
    if owner:
        header["owner"] = owner
    if sandboxed:
        header["sandboxed"] = True
    if plan is not None and plan.steps:
        header["plan"] = [dataclasses.asdict(step) for step in plan.steps]
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in check_requirement_files(source):
        digest.update(b"\0" + name.encode() + b"\0" + (source / name).read_bytes())
    return digest.hexdigest()[:16]


def owner_cache(cache_dir: Path, owner: str) -> Path:
    """The owner's own uv cache (written only by that owner's builds)."""
    return cache_dir / "uv-cache" / hashlib.sha256(owner.encode()).hexdigest()[:16]


def command(venv: Path, source: Path, config: SpaceConfig) -> tuple[str, ...]:
    python = str(venv / "bin" / "python")
    app = str(source / config.app_file)
    if config.sdk == "streamlit":
        return (python, "-m", "streamlit", "run", app, *STREAMLIT_FLAGS)
    if config.sdk == "static" and is_readme_card(source, config):
        return tuple(card_command(python, "{port}", "{host}", str(source)))
    if config.sdk == "static":
        return (python, "-m", "http.server", "{port}", "--bind", "{host}", "--directory", str(source))
    return (python, app)


def environment(config: SpaceConfig) -> tuple[tuple[str, str], ...]:
    env = {"PYTHONUNBUFFERED": "1", **config.env}
    if config.sdk == "gradio":
        env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if config.sdk == "streamlit":
        env.setdefault("STREAMLIT_SERVER_HEADLESS", "true")
        env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return tuple(sorted(env.items()))


def _choose_python(config: SpaceConfig, source: Path, env: dict[str, str], policy: VenvPolicy,
                   log: Log) -> tuple[SpaceConfig, Path]:
    """README.md's python_version, else the Python every line of requirements.txt is marked for, else the site
    default; downloaded or the nearest installed (warning) if need be."""
    requested, why = pythons.requested(config.python_version, source, policy.default_python, log)
    chosen = pythons.choose(requested, why, env, policy.python_source, log)
    return dataclasses.replace(config, python_version=chosen.version), chosen.interpreter


def _uv_env(cache_dir: Path, ca_dir: Path | None) -> dict[str, str]:
    """uv's environment: no Python downloads, and TLS that trusts the host's (and extra) CAs."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["NO_COLOR"] = "1"
    bundle = ca_bundle(ca_dir)
    if bundle is not None:
        path = cache_dir / "ca-bundle.crt"
        path.write_bytes(bundle)
        env["SSL_CERT_FILE"] = str(path)
    elif not env.get("SSL_CERT_FILE"):
        env["UV_NATIVE_TLS"] = "1"  # the system store holds any egress proxy CA
    return env


@dataclasses.dataclass(frozen=True)
class _Job:
    source: Path
    config: SpaceConfig
    env: dict[str, str]  # uv's host environment (unsandboxed) / the source of the few values passed inside
    log: Log
    deadline: float
    cancel: threading.Event | None
    refresh: bool
    owner: str
    cache_dir: Path
    sandbox: BuildSandbox | None
    uv_seed: Path | None
    plan: sdkdeps.InstallPlan
    interpreter: Path  # the base interpreter, found on the host
    store: Path  # the content-addressed store of sealed venvs (VenvPolicy.store)


@dataclasses.dataclass(frozen=True)
class _Step:
    """One uv command (arguments after the uv binary); `undated`: the same install without the date."""

    failure: str
    args: list[str]
    undated: list[str] | None = None
    retry_note: str = ""


def _create(final: Path, job: _Job) -> None:
    tag = uuid.uuid4().hex[:8]
    tmp = final.parent / f".tmp-{final.name}-{tag}"
    work = job.cache_dir / "build-work" / f"{final.name}-{tag}"
    try:
        work.mkdir(parents=True)
        constraints = work / "constraints.txt"  # read-only inside the build sandbox
        constraints.write_text(job.plan.constraints_text())
        _install(tmp, work, _steps(tmp, job, constraints), job)
        marker = tmp / MARKER
        marker.unlink(missing_ok=True)  # never follow a link the build may have planted
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"python": job.config.python, "sdk": job.config.sdk,
                                  "sdk_version": job.config.sdk_version, "owner": job.owner,
                                  "exclude_newer": job.plan.exclude_newer, "constraints": list(job.plan.constraints)}))
        if job.sandbox is not None:
            job.sandbox.seal(tmp)  # before it becomes visible: no build identity can change it afterwards
            _compile_bytecode(tmp, work, job, job.sandbox)
            _log_shared(job.log, share_files(tmp, job.store))
        else:
            _compile_bytecode_unsandboxed(tmp, work, job)
        try:
            tmp.rename(final)
        except OSError:
            if not (final / MARKER).is_file():
                raise
            job.log(f"environment {final.name} was made concurrently; using it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _compile_bytecode(venv: Path, work: Path, job: _Job, box: BuildSandbox) -> None:
    """The sealed venv's bytecode, shared through the store with earlier venvs (builder/bytecode.py); the
    files no venv had yet are compiled in the sandbox by the env's own interpreter."""
    out = work / bytecode.OUT
    out.mkdir()
    box.prepare(out)
    readonly = [venv, work / bytecode.SCRIPT, work / bytecode.JOBS, *_interpreter_mounts(job.interpreter)]
    inside = {"PATH": SANDBOX_PATH, "HOME": str(out), "TMPDIR": str(out)}

    def run(argv: list[str]) -> Result:
        wrapped, env = box.wrap(argv, writable={out: out}, readonly=readonly, env=inside, cwd=out)
        return run_streaming(wrapped, log=job.log, env=env, deadline=job.deadline, cancel=job.cancel)

    done = bytecode.compile_venv(venv, job.store, work, job.interpreter, run, os.cpu_count() or 1)
    job.log(f"spaceport: bytecode for {done.shared + done.compiled} files: {done.shared} shared with earlier "
            f"environments, {done.compiled} compiled" + (f", {done.failed} do not compile" if done.failed else ""))


def _compile_bytecode_unsandboxed(venv: Path, work: Path, job: _Job) -> None:
    """An unsandboxed build's bytecode, compiled once after the last install step (uv's --compile-bytecode
    compiled the whole venv again after every step: ~13 CPU-seconds for a small app), reading the store by
    copy and adding nothing to it (the venv stays writable by its app)."""
    (work / bytecode.OUT).mkdir()

    def run(argv: list[str]) -> Result:
        return run_streaming(argv, log=job.log, env=dict(job.env), deadline=job.deadline, cancel=job.cancel,
                             cwd=work)

    done = bytecode.compile_venv(venv, job.store, work, job.interpreter, run, os.cpu_count() or 1, sealed=False)
    job.log(f"spaceport: bytecode for {done.shared + done.compiled} files: {done.shared} copied from earlier "
            f"environments, {done.compiled} compiled" + (f", {done.failed} do not compile" if done.failed else ""))


@dataclasses.dataclass(frozen=True)
class Shared:
    files: int = 0  # files now hardlinked to an identical one of an earlier sealed venv
    bytes: int = 0  # the disk that saved
    new: int = 0  # files whose content the store did not have yet


def share_files(venv: Path, store: Path) -> Shared:
    """Hardlink every file of a sealed venv to an identical (content and mode) file of earlier sealed venvs.

    The sandboxed build's uv cannot hardlink from the owner's cache (separate mounts; and
    fs.protected_hardlinks forbids the build uid to link the root-owned inodes of sealed venvs), so each
    venv started as a full copy (about 1.1 GB for gradio). Here, as root, after `seal` (no build process is
    left and every inode is root-owned and read-only to everyone else): `store` names each content once
    (`<sha256>-<mode>`, root-only directories), so a file's bytes are on disk once across builds and
    owners: content-addressed, as DESIGN's trust boundary allows caches to be shared. `.py` sources are
    shared too: their bytecode is unchecked-hash (builder/bytecode.py), so another venv's mtime on a shared
    source cannot make it stale; the `.pyc` files are already links to the store's."""
    store.mkdir(mode=0o700, exist_ok=True)
    prune_store(store)
    files = size = new = 0
    buckets: set[str] = set()  # made once each: a mkdir per file contended for the store's lock across builds
    for path, info in _shareable(venv):
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest[:2] not in buckets:
            (store / digest[:2]).mkdir(mode=0o700, exist_ok=True)
            buckets.add(digest[:2])
        entry = store / digest[:2] / f"{digest}-{stat.S_IMODE(info.st_mode):o}"
        try:
            os.link(path, entry)
            new += 1
            continue
        except FileExistsError:
            pass
        except OSError:
            continue  # EMLINK (a popular file's link count is full) and the like: keep the copy
        if _replace_by_link(path, entry, info):
            files, size = files + 1, size + info.st_blocks * 512
    return Shared(files, size, new)


def prune_store(store: Path) -> int:
    """Drop the store's names of contents no venv holds any more (link count 1); returns how many."""
    pruned = 0
    for bucket in store.iterdir():
        for entry in bucket.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.lstat().st_nlink == 1:
                    entry.unlink()
                    pruned += 1
    return pruned


def _shareable(venv: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The venv's regular, non-empty, root-owned files with one link (not yet shared), with their lstat."""
    for top, _dirs, names in os.walk(venv, followlinks=False):
        for name in names:
            if name.endswith(".pyc") or name == MARKER:
                continue
            path = Path(top, name)
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_size > 0 and info.st_uid == 0 and info.st_nlink == 1:
                yield path, info


def _replace_by_link(path: Path, entry: Path, info: os.stat_result) -> bool:
    """Swap the venv's copy for a link to the store's inode (same size, owner and mode), atomically."""
    try:
        known = entry.lstat()
        if known.st_size != info.st_size or known.st_uid != 0 or known.st_ino == info.st_ino:
            return False
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.share")
        os.link(entry, tmp)
        os.replace(tmp, path)
    except OSError:
        return False  # pruned meanwhile, or the link count is full: keep the copy
    return True


def _log_shared(log: Log, shared: Shared) -> None:
    if shared.files:
        log(f"spaceport: {shared.files} files ({shared.bytes / 1e6:.0f} MB) shared with earlier environments "
            f"by hardlinks; {shared.new} new")


def _steps(tmp: Path, job: _Job, constraints: Path) -> list[_Step]:
    """uv venv, then one `uv pip install` per step of the install plan (requirements as they are without one)."""
    config, source = job.config, job.source
    # Bytecode is compiled after the last step, not by uv's --compile-bytecode after each one: sealed venvs
    # share it through the store (_compile_bytecode), unsandboxed ones copy from it (_compile_bytecode_unsandboxed).
    pip = ["pip", "install", "--no-config", *(["--refresh"] if job.refresh else []),
           "--python", str(tmp / "bin" / "python")]
    steps = [_Step(f"creating a Python {config.python} environment failed",
                   ["venv", "--no-config", "--relocatable", "--python", str(job.interpreter), str(tmp)])]
    if config.sdk != "static":
        steps.append(_Step("installing pip and setuptools into the environment failed", [*pip, *seed_packages(config.python)]))
    if not job.plan.steps:  # static: no SDK, the requirements as they are
        return steps + [_Step(f"installing {name} failed; fix {name}", [*pip, "-r", name])
                        for name in REQUIREMENT_FILES if (source / name).is_file()]
    for step in job.plan.steps:
        undated = [*pip, *step.without_date().uv_args(str(constraints))] if step.exclude_newer else None
        steps.append(_Step(_failure(step, config), [*pip, *step.uv_args(str(constraints))], undated, step.retry_note()))
    return steps


def seed_packages(python: str) -> list[str]:
    """What the hosted images' Python has besides the space's packages: pip (an app's own `pip install ...`
    at start then runs the venv's pip, first on PATH, not a system pip that refuses), and below Python 3.12
    setuptools with pkg_resources (the official images' ensurepip one; setuptools 81 removed it) and wheel."""
    if tuple(int(part) for part in python.split(".")[:2] if part.isdigit()) >= (3, 12):
        return ["pip"]
    return ["pip", "setuptools<81", "wheel"]


def _failure(step: sdkdeps.InstallStep, config: SpaceConfig) -> str:
    """What failed and what to fix, for one plan step."""
    line = f"{config.sdk} {config.sdk_version}"
    fits = f" (it must fit the constraints for {line}: {', '.join(step.constraints)})" if step.constraints else ""
    if step.files:
        name = step.files[0]
        return f"installing {name} failed; fix {name}{fits} or sdk_version in README.md"
    if step.what == "base packages":
        return (f"installing the base packages ({' '.join(step.requirements)}) failed{fits}; check sdk_version in "
                "README.md, or ask the admin about SPACEPORT_BUILD_BASE_PACKAGES")
    return (f"installing {' '.join(step.requirements)} (sdk_version in README.md) failed{fits}; fix sdk_version "
            "in README.md or the pins in requirements.txt that conflict with it")


def _install(tmp: Path, work: Path, steps: list[_Step], job: _Job) -> None:
    if job.sandbox is not None:
        _install_sandboxed(tmp, work, steps, job, job.sandbox)
        return
    env = dict(job.env)
    if job.owner:
        env["UV_CACHE_DIR"] = str(owner_cache(job.cache_dir, job.owner))
    uv_bin = uv.find_uv_bin()
    _run_steps(steps, lambda args: run_streaming([uv_bin, *args], log=job.log, env=env, deadline=job.deadline,
                                                 cancel=job.cancel, cwd=job.source), job)


def _install_sandboxed(tmp: Path, work: Path, steps: list[_Step], job: _Job, box: BuildSandbox) -> None:
    """Every uv step inside the sandbox: only the new venv, the owner's uv cache and a scratch dir are
    writable; the source (or, for local packages, a throwaway writable copy at the same path), uv, the
    interpreter and the constraints file are read-only; nothing else of the host is visible."""
    cache = owner_cache(job.cache_dir, job.owner or "-")
    writable = {tmp: tmp, cache: cache, work / "home": work / "home", work / "tmp": work / "tmp"}
    if has_local_paths(job.source):
        shutil.copytree(job.source, work / "src", symlinks=True)
        writable[work / "src"] = job.source
        job.log("local packages in the requirements: building them in a throwaway writable copy of the source")
    for host in writable:
        host.mkdir(parents=True, exist_ok=True)
        box.prepare(host, seed=job.uv_seed if host == cache else None)
    uv_bin = Path(uv.find_uv_bin()).resolve()
    readonly = [uv_bin, work / "constraints.txt", *_interpreter_mounts(job.interpreter)]
    inside = {"PATH": SANDBOX_PATH, "HOME": str(work / "home"), "TMPDIR": str(work / "tmp"),
              "UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1",
              "UV_LINK_MODE": "copy"}  # the cache is another mount: uv could not hardlink (share_files does, after)
    for name in ("SSL_CERT_FILE", "UV_NATIVE_TLS"):
        if name in job.env:
            inside[name] = job.env[name]
    if "SSL_CERT_FILE" in inside and not inside["SSL_CERT_FILE"].startswith("/etc/"):
        readonly.append(Path(inside["SSL_CERT_FILE"]))
    job.log(f"build sandbox: {box.describe()}")

    def run(args: list[str]) -> Result:
        wrapped, env = box.wrap([str(uv_bin), *args], writable=writable, readonly=readonly, env=inside, cwd=job.source)
        return run_streaming(wrapped, log=job.log, env=env, deadline=job.deadline, cancel=job.cancel)

    _run_steps(steps, run, job)


def _run_steps(steps: list[_Step], run: Callable[[list[str]], Result], job: _Job) -> None:
    """Each step in order; a dated install that fails is retried once without the date (saying so)."""
    for step in steps:
        result = run(step.args)
        if result.returncode != 0 and step.undated is not None:
            job.log(f"spaceport: {step.retry_note}")
            result = run(step.undated)
        if result.returncode != 0:
            refused = list(job.sandbox.refused()) if job.sandbox is not None else []
            raise BuildFailure(BUILD_ERROR, f"{_cause(step.failure, result.tail_text(), refused)}:\n{result.tail_text()}")


DISK_FULL = ("No space left on device", "os error 28", "Disk quota exceeded")


def _cause(failure: str, output: str, refused: Sequence[str] = ()) -> str:
    """The step's own failure, unless the server itself was at fault (then the space's files are not); a
    refused network access comes first, since it is what an owner (or the admin) must change."""
    if any(sign in output for sign in DISK_FULL):
        return ("the server ran out of disk space during the build (nothing in the space is at fault): an admin "
                "must free disk space (e.g. `spaceport gc`), then rebuild the space")
    if refused:
        return f"{failure}; the build needed a host builds may not reach: {'; '.join(refused)}"
    return failure


def _interpreter_mounts(interpreter: Path) -> list[Path]:
    """What a sandboxed command needs bound read-only to run `interpreter` (nothing for the system's /usr)."""
    return [] if interpreter.is_relative_to("/usr") else [_prefix(interpreter)]


def _prefix(interpreter: Path) -> Path:
    """The installation prefix holding bin/pythonX and lib/pythonX (bound read-only)."""
    return interpreter.parent.parent
