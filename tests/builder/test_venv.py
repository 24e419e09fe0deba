"""Real uv builds (network to PyPI or a warm uv cache)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.artifact import VenvArtifact
from builder.build import build
from builder.errors import BUILD_ERROR, BuildCancelled, BuildFailure


def version_in(venv: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_gradio_venv_then_code_only_push_reuses_it(space: Callable[[str], Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first_log: list[str] = []
    first = build(space("gradio"), kind="venv", cache_dir=cache, log=first_log.append)
    assert isinstance(first, VenvArtifact)
    assert first.command == (str(first.venv / "bin" / "python"), str(first.source / "app.py"))
    assert first.health_path == "/" and first.port == 7860
    assert version_in(first.venv, "gradio")
    assert any(line.startswith("creating environment") for line in first_log)
    assert any("gradio" in line for line in first_log)  # uv's own output is streamed

    second_source = space("gradio")
    (second_source / "app.py").write_text((second_source / "app.py").read_text().replace("Hello", "Hi"))
    second_log: list[str] = []
    second = build(second_source, kind="venv", cache_dir=cache, log=second_log.append)
    assert isinstance(second, VenvArtifact)
    assert second.venv == first.venv and second.source == second_source
    assert f"reusing environment {first.venv.name}" in second_log

    (second_source / "requirements.txt").write_text("six\n")
    third = build(second_source, kind="venv", cache_dir=cache, log=lambda _line: None)
    assert isinstance(third, VenvArtifact) and third.venv != first.venv
    assert version_in(third.venv, "six")
    assert not list((cache / "venvs").glob(".tmp-*"))


def test_streamlit_and_static_commands(space: Callable[[str], Path], tmp_path: Path) -> None:
    streamlit = build(space("streamlit"), kind="venv", cache_dir=tmp_path, log=lambda _line: None)
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
        build(space("bad-requirements"), kind="venv", cache_dir=tmp_path, log=lambda _line: None)
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


def test_missing_python_version_falls_back_with_warning(space: Callable[[str], Path], tmp_path: Path) -> None:
    source = space("static")
    (source / "README.md").write_text('---\nsdk: static\npython_version: "3.99"\n---\n')
    log: list[str] = []
    artifact = build(source, kind="venv", cache_dir=tmp_path, log=log.append)
    assert isinstance(artifact, VenvArtifact) and Path(artifact.command[0]).is_file()
    assert any("Python 3.99" in line and "building with Python 3.11" in line for line in log)


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
