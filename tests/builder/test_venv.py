"""Real uv builds (network to PyPI or a warm uv cache), and the install plan / Python choice around them.

Builds that are about something else use LEAN (the Python the warm uv seed has wheels for, one base
package) to keep the suite fast; the hosted defaults are proven by the unit tests and by one real
sandboxed build (test_sandboxed_hosted_defaults_sdk_pin_wins_over_requirements).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from builder.artifact import VenvArtifact
from builder.build import build
from builder.errors import BUILD_ERROR, BuildCancelled, BuildFailure
from builder.venv import VenvPolicy

LEAN = VenvPolicy(default_python="3.11", base_packages=("requests",))


def version_in(venv: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_gradio_venv_then_code_only_push_reuses_it(space: Callable[[str], Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first_log: list[str] = []
    first = build(space("gradio"), kind="venv", cache_dir=cache, log=first_log.append, venv_policy=LEAN)
    assert isinstance(first, VenvArtifact)
    assert first.command == (str(first.venv / "bin" / "python"), str(first.source / "app.py"))
    assert first.health_path == "/" and first.port == 7860
    assert version_in(first.venv, "gradio") and version_in(first.venv, "requests")  # base packages, then the sdk
    assert any(line.startswith("creating environment") for line in first_log)
    assert any("installing base packages then gradio sdk pin" in line for line in first_log)
    assert any("gradio" in line for line in first_log)  # uv's own output is streamed

    second_source = space("gradio")
    (second_source / "app.py").write_text((second_source / "app.py").read_text().replace("Hello", "Hi"))
    second_log: list[str] = []
    second = build(second_source, kind="venv", cache_dir=cache, log=second_log.append, venv_policy=LEAN)
    assert isinstance(second, VenvArtifact)
    assert second.venv == first.venv and second.source == second_source
    assert f"reusing environment {first.venv.name}" in second_log

    (second_source / "requirements.txt").write_text("six\n")
    third = build(second_source, kind="venv", cache_dir=cache, log=lambda _line: None, venv_policy=LEAN)
    assert isinstance(third, VenvArtifact) and third.venv != first.venv
    assert version_in(third.venv, "six")
    assert not list((cache / "venvs").glob(".tmp-*"))


def test_streamlit_and_static_commands(space: Callable[[str], Path], tmp_path: Path) -> None:
    streamlit = build(space("streamlit"), kind="venv", cache_dir=tmp_path, log=lambda _line: None, venv_policy=LEAN)
    assert isinstance(streamlit, VenvArtifact)
    assert streamlit.command[1:4] == ("-m", "streamlit", "run")
    assert "--server.enableXsrfProtection" in streamlit.command and streamlit.health_path == "/_stcore/health"
    static_source = space("static")
    static = build(static_source, kind="venv", cache_dir=tmp_path, log=lambda _line: None)
    assert isinstance(static, VenvArtifact)
    assert static.command[1:] == ("-m", "http.server", "{port}", "--bind", "{host}", "--directory", str(static_source))
    assert Path(static.command[0]).is_file()


def test_bad_requirements_is_build_error_with_output(space: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(BuildFailure) as info:
        build(space("bad-requirements"), kind="venv", cache_dir=tmp_path, log=lambda _line: None, venv_policy=LEAN)
    assert info.value.stage == BUILD_ERROR
    assert "requirements.txt" in info.value.message
    assert "spaceport-no-such-package-zz9" in info.value.message
    assert not list((tmp_path / "venvs").iterdir())


def test_docker_space_needs_docker_runtime(space: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(BuildFailure) as info:
        build(space("docker"), kind="venv", cache_dir=tmp_path, log=lambda _line: None)
    assert info.value.stage == BUILD_ERROR and "SPACEPORT_RUNTIME=docker" in info.value.message


@pytest.mark.parametrize(("name", "stage"), [("broken-yaml", "CONFIG_ERROR"), ("missing-app-file", "NO_APP_FILE")])
def test_config_failures_surface_with_stage(space: Callable[[str], Path], tmp_path: Path, name: str, stage: str) -> None:
    with pytest.raises(BuildFailure) as info:
        build(space(name), kind="venv", cache_dir=tmp_path, log=lambda _line: None)
    assert info.value.stage == stage


def test_packages_txt_warns_and_cancel_stops(space: Callable[[str], Path], tmp_path: Path) -> None:
    source = space("static")
    (source / "packages.txt").write_text("ffmpeg\n")
    cancel = threading.Event()
    cancel.set()
    log: list[str] = []
    with pytest.raises(BuildCancelled):
        build(source, kind="venv", cache_dir=tmp_path, log=log.append, cancel=cancel)
    assert any("packages.txt" in line and "container builds" in line for line in log)


def test_inferred_space_logs_note(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "index.html").write_text("<p>hi</p>")
    log: list[str] = []
    build(source, kind="venv", cache_dir=tmp_path / "cache", log=log.append)
    assert any(line.startswith("note:") and "inferred sdk=static" in line for line in log)


@pytest.mark.parametrize(("readme", "policy", "why"), [
    ('---\nsdk: static\npython_version: "3.99"\n---\n', VenvPolicy(), "python_version in README.md"),
    ("---\nsdk: static\n---\n", VenvPolicy(default_python="3.99"), "the default python_version"),
])
def test_missing_python_falls_back_to_the_nearest_with_warning(space: Callable[[str], Path], tmp_path: Path,
                                                               readme: str, policy: VenvPolicy, why: str) -> None:
    source = space("static")
    (source / "README.md").write_text(readme)
    log: list[str] = []
    artifact = build(source, kind="venv", cache_dir=tmp_path, log=log.append, venv_policy=policy)
    assert isinstance(artifact, VenvArtifact) and Path(artifact.command[0]).is_file()
    warning = next(line for line in log if line.startswith("warning: Python 3.99"))
    assert f"({why}" in warning and "SPACEPORT_BUILD_PYTHON_DOWNLOADS=automatic" in warning
    used = warning.split("building with the nearest, Python ")[1].split(".")[:2]
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    ran = subprocess.run([artifact.command[0], "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert ran == ".".join(used)


def test_environment_key_is_per_owner_and_per_isolation(space: Callable[[str], Path]) -> None:
    from builder.spaceconfig import load_space_config
    from builder.venv import environment_key, owner_cache

    source = space("gradio")
    config = load_space_config(source)
    alice = environment_key(source, config, "alice", sandboxed=True)
    assert alice == environment_key(source, config, "alice", sandboxed=True)
    assert alice != environment_key(source, config, "bob", sandboxed=True)
    assert alice != environment_key(source, config, "alice")
    assert owner_cache(Path("/c"), "alice") != owner_cache(Path("/c"), "bob")


def test_outside_pointing_requirements_refused_before_uv_runs(space: Callable[[str], Path], tmp_path: Path) -> None:
    source = space("static")
    (source / "requirements.txt").write_text("-r /etc/passwd\n")
    lines: list[str] = []
    with pytest.raises(BuildFailure) as info:
        build(source, kind="venv", cache_dir=tmp_path, log=lines.append)
    assert info.value.stage == "CONFIG_ERROR" and "requirements.txt line 1" in info.value.message
    assert not any("root:" in line for line in lines) and not (tmp_path / "venvs").exists()


# --- hosted defaults, the install plan and the Python source (unit) ------------------------------------


def test_policy_and_settings_defaults_are_the_hosted_ones() -> None:
    from builder import sdkdeps
    from controller.config import Settings
    from controller.services.builds import venv_policy

    assert VenvPolicy().default_python == "3.10" and VenvPolicy().base_packages == sdkdeps.BASE_PACKAGES
    assert venv_policy(Settings(data_dir=Path("/nonexistent-spaceport"))) == VenvPolicy()
    lean = Settings(data_dir=Path("/nonexistent-spaceport"), build_default_python="3.11", build_base_packages="requests, six",
                    build_python_downloads="automatic", build_python_mirror="https://mirror.example/pbs",
                    build_python_path="/opt/py/bin:/srv/py/bin")
    policy = venv_policy(lean)
    assert policy.default_python == "3.11" and policy.base_packages == ("requests", "six")
    assert policy.python_source.downloads and policy.python_source.mirror == "https://mirror.example/pbs"
    assert policy.python_source.search_path == ("/opt/py/bin", "/srv/py/bin")


def test_python_search_path_has_pyenv_installs_and_no_shims(tmp_path: Path) -> None:
    from builder.pythons import PythonSource, discovery_env, search_path

    root = tmp_path / "pyenv"
    for name in ("3.9.18", "3.10.13", "3.10.2"):
        (root / "versions" / name / "bin").mkdir(parents=True)
    (root / "versions" / "myvenv" / "bin").mkdir(parents=True)
    (root / "versions" / "myvenv" / "pyvenv.cfg").write_text("home = /x\n")  # a pyenv-virtualenv env
    dirs = search_path(f"{root}/shims:/usr/local/bin:/usr/bin", ["/opt/py/bin"], root)
    assert dirs == ["/opt/py/bin", f"{root}/versions/3.10.13/bin", f"{root}/versions/3.10.2/bin",
                    f"{root}/versions/3.9.18/bin", "/usr/local/bin", "/usr/bin"]
    env = discovery_env({"PATH": "/usr/bin", "PYENV_ROOT": str(root)}, tmp_path / "cache",
                        PythonSource(downloads=True, mirror="https://mirror.example/pbs"))
    assert env["UV_PYTHON_DOWNLOADS"] == "automatic" and env["UV_PYTHON_INSTALL_MIRROR"] == "https://mirror.example/pbs"
    assert env["UV_PYTHON_INSTALL_DIR"] == str(tmp_path / "cache" / "pythons")
    assert discovery_env({}, tmp_path, PythonSource())["UV_PYTHON_DOWNLOADS"] == "never"


@pytest.mark.parametrize("version", ["--help", "3.10; id", "latest"])
def test_python_version_must_be_a_version(space: Callable[[str], Path], tmp_path: Path, version: str) -> None:
    source = space("static")
    (source / "README.md").write_text(f'---\nsdk: static\npython_version: "{version}"\n---\n')
    with pytest.raises(BuildFailure) as info:
        build(source, kind="venv", cache_dir=tmp_path, log=lambda _line: None)
    assert info.value.stage == "CONFIG_ERROR" and "python_version" in info.value.message


def test_environment_key_follows_the_plan(space: Callable[[str], Path]) -> None:
    from builder.sdkdeps import install_plan
    from builder.spaceconfig import SpaceConfig
    from builder.venv import environment_key

    source = space("gradio")
    config = SpaceConfig(sdk="gradio", sdk_version="4.44.0", python_version="3.10")
    dated = install_plan(config, set(), datetime(2024, 9, 5, tzinfo=UTC))
    keys = {environment_key(source, config, "alice", plan=plan) for plan in (
        dated, install_plan(config, set(), None), install_plan(config, set(), None, ("requests",)),
        install_plan(SpaceConfig(sdk="gradio", sdk_version="5.0.0", python_version="3.10"), set(), None))}
    assert len(keys) == 4
    assert environment_key(source, config, "alice", plan=dated) == environment_key(source, config, "alice", plan=dated)


def _job(tmp_path: Path, plan: object, log: list[str]) -> object:
    from builder.spaceconfig import SpaceConfig
    from builder.venv import _Job

    config = SpaceConfig(sdk="streamlit", sdk_version="1.34.0", python_version="3.10")
    return _Job(tmp_path, config, {}, log.append, 0.0, None, False, "", tmp_path, None, None, plan, Path("/py/bin/python3.10"),
                tmp_path / "store")


def test_plan_becomes_one_uv_install_per_step_with_constraints_and_date(tmp_path: Path) -> None:
    from builder.sdkdeps import install_plan
    from builder.spaceconfig import SpaceConfig
    from builder.venv import _steps

    (tmp_path / "requirements.txt").write_text("streamlit==1.33.0\n")
    config = SpaceConfig(sdk="streamlit", sdk_version="1.34.0", python_version="3.10")
    plan = install_plan(config, {"requirements.txt"}, datetime(2024, 4, 16, tzinfo=UTC))
    steps = _steps(tmp_path / "venv", _job(tmp_path, plan, []), tmp_path / "c.txt")  # type: ignore[arg-type]
    assert steps[0].args[:4] == ["venv", "--no-config", "--relocatable", "--python"] and "/py/bin/python3.10" in steps[0].args
    assert steps[1].args[-3:] == ["pip", "setuptools<81", "wheel"]  # as the hosted images' Python 3.10 has
    installs = steps[2:]
    assert [s.args[s.args.index(str(tmp_path / "venv" / "bin" / "python")) + 1] for s in installs] == \
        ["datasets", "-r", "streamlit==1.34.0"]  # base packages, requirements.txt, the sdk pin last
    for step in installs:
        assert step.args[step.args.index("--constraint") + 1] == str(tmp_path / "c.txt")
        assert step.args[step.args.index("--exclude-newer") + 1] == "2024-04-17T00:00:00Z"
        assert step.undated is not None and "--exclude-newer" not in step.undated and "--constraint" in step.undated
    assert "fix requirements.txt (it must fit the constraints for streamlit 1.34.0: numpy<2)" in installs[1].failure
    assert "sdk_version in README.md" in installs[2].failure


def test_seed_packages_follow_the_official_images() -> None:
    from builder.venv import seed_packages

    assert seed_packages("3.10") == ["pip", "setuptools<81", "wheel"]  # pkg_resources, as ensurepip's setuptools
    assert seed_packages("3.11") == seed_packages("3.8")
    assert seed_packages("3.12") == ["pip"] and seed_packages("3.13") == ["pip"]  # no setuptools since 3.12


def test_a_failing_dated_step_is_retried_once_without_the_date(tmp_path: Path) -> None:
    from builder.proc import Result
    from builder.sdkdeps import install_plan
    from builder.spaceconfig import SpaceConfig
    from builder.venv import _run_steps, _steps

    (tmp_path / "requirements.txt").write_text("x\n")
    plan = install_plan(SpaceConfig(sdk="streamlit", sdk_version="1.34.0", python_version="3.10"), {"requirements.txt"},
                        datetime(2024, 4, 16, tzinfo=UTC))
    log: list[str] = []
    job = _job(tmp_path, plan, log)
    steps = _steps(tmp_path / "venv", job, tmp_path / "c.txt")  # type: ignore[arg-type]
    ran: list[list[str]] = []

    def run(args: list[str]) -> Result:  # requirements.txt resolves only without the date, never twice undated
        ran.append(args)
        fails = "-r" in args and ("--exclude-newer" in args or len([a for a in ran if "-r" in a]) > 2)
        return Result(1, ["  x No solution found when resolving dependencies"]) if fails else Result(0)

    _run_steps(steps, run, job)  # type: ignore[arg-type]
    assert [("-r" in a, "--exclude-newer" in a) for a in ran] == [(False, False), (False, False), (False, True), (True, True), (True, False),
                                                                  (False, True)]
    assert any("requirements.txt cannot resolve as of 2024-04-17T00:00:00Z" in line and "retrying" in line for line in log)
    with pytest.raises(BuildFailure) as info:
        _run_steps(steps, run, job)  # type: ignore[arg-type]
    assert "installing requirements.txt failed; fix requirements.txt" in info.value.message
    assert "No solution found" in info.value.message


def test_a_full_disk_is_the_servers_fault_not_the_requirements(tmp_path: Path) -> None:
    """uv's own words when the data dir's disk filled up (seen in the corpus bench): the stage message tells
    the owner their files are fine and the admin what to do, the output still follows."""
    from builder.proc import Result
    from builder.sdkdeps import install_plan
    from builder.spaceconfig import SpaceConfig
    from builder.venv import _run_steps, _steps

    plan = install_plan(SpaceConfig(sdk="streamlit", sdk_version="1.34.0", python_version="3.10"), set(), None)
    job = _job(tmp_path, plan, [])
    steps = _steps(tmp_path / "venv", job, tmp_path / "c.txt")  # type: ignore[arg-type]
    full = ["error: Failed to install: urllib3-2.8.0-py3-none-any.whl (urllib3==2.8.0)",
            "  cause: failed to copy file from a to b: No space left on device (os error 28)"]

    def run(args: list[str]) -> Result:
        return Result(1, full) if "install" in args else Result(0)

    with pytest.raises(BuildFailure) as info:
        _run_steps(steps, run, job)  # type: ignore[arg-type]
    assert info.value.message.startswith("the server ran out of disk space during the build")
    assert "spaceport gc" in info.value.message and "os error 28" in info.value.message
    assert "sdk_version in README.md" not in info.value.message.splitlines()[0]


# --- one real sandboxed build with the hosted defaults -------------------------------------------------


def test_sandboxed_hosted_defaults_sdk_pin_wins_over_requirements(tmp_path: Path) -> None:
    """Hosted defaults (Python 3.10, the base packages) in the real sandbox: requirements pin streamlit 1.33.0,
    sdk_version pins 1.34.0 and wins; the sdk line's constraint and release date are used and logged; a
    requirement newer than that date makes its step retry without the date."""
    from controller.config import Settings
    from controller.runtimes.buildbox import build_box_config, build_sandbox_status, open_build_sandbox
    from tests.support.tiers import missing

    status = build_sandbox_status()
    if not status.available:
        missing(f"build sandbox unavailable: {status.reason}")
    from builder.pythons import discovery_env, find

    if find("3.10", discovery_env(dict(os.environ), tmp_path, VenvPolicy().python_source)) is None:
        missing("no Python 3.10 here (the hosted default); the fallback is tested above")
    source = tmp_path / "src"
    source.mkdir()
    (source / "README.md").write_text("---\nsdk: streamlit\nsdk_version: 1.34.0\n---\n")
    (source / "app.py").write_text("import streamlit as st\nst.write('hi')\n")
    (source / "requirements.txt").write_text("streamlit==1.33.0\ntyping-extensions==4.12.2\n")  # 4.12.2: 2024-06
    settings = Settings(data_dir=tmp_path / "data")
    log: list[str] = []
    with open_build_sandbox(build_box_config(settings), "hosted", log.append) as box:
        artifact = build(source, kind="venv", cache_dir=settings.artifacts_dir, log=log.append, owner="hosted",
                         sandbox=box, uv_seed=Path.home() / ".cache" / "uv")
    assert isinstance(artifact, VenvArtifact)
    assert version_in(artifact.venv, "streamlit") == "1.34.0"
    assert version_in(artifact.venv, "datasets") and version_in(artifact.venv, "hf-transfer")
    assert version_in(artifact.venv, "numpy").startswith("1.")
    assert version_in(artifact.venv, "typing-extensions") == "4.12.2"
    assert "python 3.10" in next(line for line in log if line.startswith("creating environment"))
    assert any("installing base packages then requirements.txt then streamlit sdk pin" in line for line in log)
    assert any("resolve as of 2024-05-03" in line for line in log)
    assert any("constraints for streamlit 1.34.0: numpy<2" in line for line in log)
    assert any("requirements.txt cannot resolve as of 2024-05-03" in line for line in log)
    assert not any("base packages cannot resolve" in line for line in log)


def test_two_sites_sharing_a_store_compile_a_venvs_bytecode_once(tmp_path: Path) -> None:
    """SPACEPORT_BUILD_STORE: the second site's sandboxed build of the same requirements links every file
    and every .pyc to the first site's (same inodes), compiles nothing, and keeps no store of its own."""
    from controller.config import Settings
    from controller.runtimes.buildbox import build_box_config, build_sandbox_status, open_build_sandbox
    from controller.services.builds import venv_policy
    from tests.support.tiers import missing

    status = build_sandbox_status()
    if not status.available:
        missing(f"build sandbox unavailable: {status.reason}")
    source = tmp_path / "src"
    source.mkdir()
    (source / "README.md").write_text("---\nsdk: static\n---\n")
    (source / "index.html").write_text("ok")
    (source / "requirements.txt").write_text("six\n")
    store = tmp_path / "shared-store"
    built: list[tuple[VenvArtifact, list[str], Settings]] = []
    for site in ("one", "two"):
        settings = Settings(data_dir=tmp_path / site, build_store=store)
        log: list[str] = []
        with open_build_sandbox(build_box_config(settings), "alice", log.append) as box:
            artifact = build(source, kind="venv", cache_dir=settings.artifacts_dir, log=log.append, owner="alice",
                             sandbox=box, uv_seed=Path.home() / ".cache" / "uv", venv_policy=venv_policy(settings))
        assert isinstance(artifact, VenvArtifact)
        built.append((artifact, log, settings))
    (first, first_log, _), (second, second_log, second_settings) = built
    assert any(line.endswith(" compiled") and " 0 compiled" not in line for line in first_log), first_log
    compiled = next(line for line in second_log if line.startswith("spaceport: bytecode for"))
    assert compiled.endswith(" 0 compiled"), compiled
    six = "lib/python*/site-packages/six.py"
    (mine,), (theirs,) = first.venv.glob(six), second.venv.glob(six)
    assert mine.stat().st_ino == theirs.stat().st_ino
    (pyc_one,), (pyc_two,) = (v.venv.glob("lib/python*/site-packages/__pycache__/six.*.pyc") for v in (first, second))
    assert pyc_one.stat().st_ino == pyc_two.stat().st_ino
    assert any(store.rglob("*-pyc-*")) and not (second_settings.artifacts_dir / "venv-store").exists()


def _sealed_venv(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if name.endswith(".so") else 0o644)
    return root


def test_sealed_venvs_share_identical_files_and_sources_by_hardlinks_but_never_pycs_or_unsealed_files(tmp_path: Path) -> None:
    """Sources are shared too: their bytecode is unchecked-hash (builder/bytecode.py), so a shared source's
    mtime cannot make it stale; .pyc files are left to the bytecode store."""
    from builder.venv import prune_store, share_files

    store = tmp_path / "store"
    common = {"lib/site-packages/pkg/_core.so": b"ELF" * 5000, "lib/site-packages/pkg/static/app.js": b"js" * 3000,
              "lib/site-packages/pkg/mod.py": b"x = 1\n", "lib/site-packages/pkg/__pycache__/mod.cpython-311.pyc": b"pyc"}
    first = _sealed_venv(tmp_path / "a", common)
    second = _sealed_venv(tmp_path / "b", {**common, "lib/site-packages/pkg/own.so": b"other"})
    assert share_files(first, store).new == 3 and share_files(first, store).files == 0  # twice: nothing more
    shared = share_files(second, store)
    assert (shared.files, shared.new) == (3, 1)
    for name in ("lib/site-packages/pkg/_core.so", "lib/site-packages/pkg/static/app.js", "lib/site-packages/pkg/mod.py"):
        assert (first / name).stat().st_ino == (second / name).stat().st_ino
        assert (second / name).read_bytes() == common[name]
    assert stat.S_IMODE((second / "lib/site-packages/pkg/_core.so").stat().st_mode) == 0o755
    name = "lib/site-packages/pkg/__pycache__/mod.cpython-311.pyc"
    assert (first / name).stat().st_ino != (second / name).stat().st_ino
    unsealed = _sealed_venv(tmp_path / "c", common)
    os.chown(unsealed / "lib/site-packages/pkg/static/app.js", 100_123, 100_123)  # a build uid's file: never shared
    share_files(unsealed, store)
    assert (unsealed / "lib/site-packages/pkg/static/app.js").stat().st_nlink == 1
    shutil.rmtree(first)
    shutil.rmtree(second)
    shutil.rmtree(unsealed)
    assert prune_store(store) == 4 and not any(store.rglob("*-*"))
