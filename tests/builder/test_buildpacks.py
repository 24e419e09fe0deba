from __future__ import annotations

from pathlib import Path

import pytest

from builder import buildpacks
from builder.buildpacks.base import RenderContext, RepoFiles
from builder.spaceconfig import SpaceConfig, load_space_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "spaces"


def files(*paths: str, app: str = "") -> RepoFiles:
    return RepoFiles(paths=frozenset(paths), texts={"app.py": app} if app else {})


@pytest.mark.parametrize(
    ("repo", "sdk"),
    [
        (files("Dockerfile", "app.py", "index.html"), "docker"),
        (files("app.py", "index.html", app="import gradio as gr\n"), "gradio"),
        (files("app.py", app="import streamlit as st\n"), "streamlit"),
        (files("index.html", "style.css"), "static"),
    ],
)
def test_chain_detects_in_order(repo: RepoFiles, sdk: str) -> None:
    pack = buildpacks.detect(repo)
    assert pack is not None and pack.sdk == sdk


def test_chain_order_and_nothing_detected() -> None:
    assert [p.sdk for p in buildpacks.CHAIN] == ["docker", "gradio", "streamlit", "static"]
    assert buildpacks.detect(files("notes.txt")) is None


def test_scan_skips_git(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "app.py").write_text("import streamlit\n")
    scanned = RepoFiles.scan(tmp_path)
    assert scanned.paths == frozenset({"app.py"}) and "streamlit" in scanned.texts["app.py"]


def index_of(lines: list[str], prefix: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


def test_gradio_render_is_layered_for_cache() -> None:
    config = SpaceConfig(sdk="gradio", sdk_version="4.44.1", python_version="3.11")
    repo = files("app.py", "requirements.txt", "pre-requirements.txt", "packages.txt")
    text = buildpacks.for_config(config).render(config, RenderContext(files=repo, build_arg_names=("GREETING",)))
    lines = text.splitlines()
    order = [
        index_of(lines, "FROM python:3.11"),
        index_of(lines, "COPY packages.txt"),
        index_of(lines, "USER 1000"),
        index_of(lines, "RUN pip install --no-cache-dir --progress-bar off -r pre-requirements.txt"),
        index_of(lines, "RUN pip install --no-cache-dir --progress-bar off -r requirements.txt"),
        index_of(lines, "ARG GREETING"),
        index_of(lines, "COPY --chown=1000:1000 . /home/user/app"),
        index_of(lines, "LABEL"),
    ]
    assert order == sorted(order)
    assert lines[-1].startswith("LABEL")
    assert '"gradio==4.44.1"' in lines[order[4]]
    env = lines[index_of(lines, "ENV ")]
    for item in ("HOME=/home/user", "GRADIO_SERVER_NAME=0.0.0.0", "GRADIO_SERVER_PORT=7860", "PYTHONUNBUFFERED=1"):
        assert item in env
    assert "WORKDIR /home/user/app" in lines
    assert 'CMD ["python", "app.py"]' in lines


def test_gradio_without_requirements_installs_unpinned_sdk() -> None:
    config = SpaceConfig(sdk="gradio")
    text = buildpacks.for_config(config).render(config, RenderContext(files=files("app.py")))
    assert 'RUN pip install --no-cache-dir --progress-bar off "gradio"' in text
    assert "packages.txt" not in text and "requirements" not in text


def test_streamlit_render_headless_and_iframe_friendly() -> None:
    config = load_space_config(FIXTURES / "streamlit")
    text = buildpacks.for_config(config).render(config, RenderContext(files=RepoFiles.scan(FIXTURES / "streamlit")))
    cmd = next(line for line in text.splitlines() if line.startswith("CMD"))
    for flag in ('"--server.headless", "true"', '"--server.enableXsrfProtection", "false"', '"--server.enableCORS", "false"'):
        assert flag in cmd
    assert "STREAMLIT_SERVER_PORT=7860" in text and "STREAMLIT_SERVER_ADDRESS=0.0.0.0" in text


def test_static_render_serves_directory_without_pip() -> None:
    config = load_space_config(FIXTURES / "static")
    text = buildpacks.for_config(config).render(config, RenderContext(files=RepoFiles.scan(FIXTURES / "static")))
    assert "http.server" in text and "pip install" not in text


def test_docker_render_is_the_users_dockerfile() -> None:
    config = load_space_config(FIXTURES / "docker")
    user = (FIXTURES / "docker" / "Dockerfile").read_text()
    ctx = RenderContext(files=RepoFiles.scan(FIXTURES / "docker"), dockerfile=user)
    assert buildpacks.for_config(config).render(config, ctx) == user
