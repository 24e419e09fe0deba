"""Offline tests for fixes found by the corpus bench (bench/corpus.py, issue 21): real repo shapes, no engine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from builder import buildpacks
from builder.artifact import VenvArtifact
from builder.baseimages import UV_BASE, default_aliases, python_base, resolve_from_lines
from builder.buildpacks.base import RenderContext, RepoFiles
from builder.buildpacks.static import StaticBuildPack
from builder.card import card_page
from builder.errors import NO_APP_FILE, BuildFailure
from builder.image import prepare_dockerfile
from builder.spaceconfig import SpaceConfig, SpaceConfigError, load_space_config
from builder.venv import command as venv_command

README_DOCKER = "---\ntitle: t\nsdk: docker\n---\n"


def test_lower_case_dockerfile_is_the_docker_spaces_dockerfile(tmp_path: Path) -> None:
    """adamhinton/chess-recommender-hf-space names it `dockerfile`; `docker build .` accepts that name too."""
    (tmp_path / "README.md").write_text(README_DOCKER)
    (tmp_path / "dockerfile").write_text("FROM spaceport/base-python:3.11\nCMD [\"python\", \"-V\"]\n")
    config = load_space_config(tmp_path)
    files = RepoFiles.scan(tmp_path)
    text = prepare_dockerfile(tmp_path, config, files, {}, None, None, None, print, available=lambda ref: True)
    assert text.startswith("FROM spaceport/base-python:3.11")
    pack = buildpacks.detect(files)
    assert pack is not None and pack.sdk == "docker"


def test_docker_space_without_any_dockerfile_still_says_what_to_add(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(README_DOCKER)
    (tmp_path / "Dockerfile.dev").write_text("FROM scratch\n")  # not a name docker build picks up
    with pytest.raises(SpaceConfigError) as caught:
        load_space_config(tmp_path)
    assert caught.value.stage == NO_APP_FILE and "Dockerfile" in str(caught.value)


UV_COPY = "FROM python:3.11-slim\nCOPY --from=ghcr.io/astral-sh/uv:latest /uv /uvx /bin/\nRUN uv --version\n"


def resolve(text: str, have: set[str]) -> tuple[str, list[str]]:
    return resolve_from_lines(text, default_aliases(), None, lambda ref: ref in have)


def test_copy_from_the_uv_image_resolves_to_the_bootstrapped_uv() -> None:
    """Aranaur/prob-lab: `COPY --from=ghcr.io/astral-sh/uv:latest` failed at once on a registry-less engine."""
    text, messages = resolve(UV_COPY, {UV_BASE, python_base("3.11")})
    assert f"COPY --from={UV_BASE} /uv /uvx /bin/" in text.splitlines()
    assert any("ghcr.io/astral-sh/uv:latest -> spaceport/base-uv:latest" in m for m in messages)


def test_copy_from_a_pinned_uv_warns_and_uses_the_servers_uv() -> None:
    text, messages = resolve(UV_COPY.replace("uv:latest", "uv:0.5.4"), {UV_BASE, python_base("3.11")})
    assert f"COPY --from={UV_BASE} /uv /uvx /bin/" in text
    assert any(m.startswith("warning: uv 0.5.4 is not available") for m in messages)


def test_copy_from_stages_indexes_and_args_are_left_alone() -> None:
    dockerfile = ("FROM python:3.11-slim AS build\nRUN true\nFROM python:3.11-slim\nCOPY --from=build /a /a\n"
                  "COPY --from=0 /b /b\nCOPY --chown=1000 --from=${TOOLS} /c /c\n")
    text, _ = resolve(dockerfile, {python_base("3.11")})
    assert "COPY --from=build /a /a" in text and "COPY --from=0 /b /b" in text and "--from=${TOOLS}" in text


def test_copy_from_an_unavailable_image_names_it_and_the_fix() -> None:
    with pytest.raises(BuildFailure) as caught:
        resolve("FROM python:3.11-slim\nCOPY --from=example.org/tools:1 /t /t\n", {python_base("3.11")})
    assert "example.org/tools:1" in str(caught.value) and "line 2" in str(caught.value)


def test_uv_alias_without_the_bootstrapped_image_says_how_to_make_it() -> None:
    with pytest.raises(BuildFailure) as caught:
        resolve(UV_COPY, {python_base("3.11")})
    assert UV_BASE in str(caught.value) and "spaceport images bootstrap" in str(caught.value)


CARD = ("---\ntitle: README\nemoji: 👁\nsdk: static\npinned: false\n---\n\n"
        "<div class=\"lg:col-span-3\">\n  <p class=\"mb-2\">\n    Part of <u><a href=\"https://example.org/\">a demo</a></u>.\n"
        "  </p>\n</div>\n\n# Our *team*\n\nEdit this `README.md` file, see [docs](https://example.org/docs).\n\n- one\n- **two**\n")


def test_readme_only_static_space_is_a_card_not_no_app_file(tmp_path: Path) -> None:
    """training-transformers-together/hf-organization-page: README.md only; Hugging Face shows it as the page."""
    (tmp_path / "README.md").write_text(CARD)
    config = load_space_config(tmp_path)
    assert config.sdk == "static" and any("README.md" in note for note in config.notes)


def test_static_space_naming_a_missing_app_file_is_still_no_app_file(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(CARD.replace("pinned: false", "app_file: dist/index.html"))
    with pytest.raises(SpaceConfigError) as caught:
        load_space_config(tmp_path)
    assert caught.value.stage == NO_APP_FILE


def test_card_page_renders_the_readme_body() -> None:
    page = card_page(CARD)
    assert "<title>README</title>" in page and "sdk: static" not in page
    assert '<u><a href="https://example.org/">a demo</a></u>' in page  # inline HTML passes through
    assert "<h1>Our <em>team</em></h1>" in page and "<code>README.md</code>" in page
    assert '<a href="https://example.org/docs">docs</a>' in page and "<li><strong>two</strong></li>" in page


def test_card_server_serves_the_readme_and_the_files(tmp_path: Path) -> None:
    """The local runtime's command for a card, run for real with this interpreter (stdlib only)."""
    (tmp_path / "README.md").write_text(CARD)
    (tmp_path / "logo.svg").write_text("<svg/>")
    config = load_space_config(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [a.replace("{port}", str(port)).replace("{host}", "127.0.0.1")
            for a in venv_command(Path(sys.executable).parent.parent, tmp_path, config)]
    argv[0] = sys.executable
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page = _get(f"http://127.0.0.1:{port}/")
        assert "<h1>Our <em>team</em></h1>" in page
        assert _get(f"http://127.0.0.1:{port}/logo.svg") == "<svg/>"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str) -> str:
    for _ in range(200):
        try:
            return httpx.get(url, timeout=5).text
        except httpx.TransportError:
            threading.Event().wait(0.05)
    raise AssertionError(f"{url} never answered")


def test_card_image_cmd_runs_the_card_server() -> None:
    files = RepoFiles(paths=frozenset({"README.md"}))
    config = SpaceConfig(sdk="static", app_file="index.html")
    text = StaticBuildPack().render(config, RenderContext(files=files))
    cmd = json.loads(next(line for line in text.splitlines() if line.startswith("CMD "))[4:])
    assert cmd[:2] == ["sh", "-c"] and 'python -c "$0"' in cmd[2] and "def card_page" in cmd[3]
    with_index = StaticBuildPack().render(config, RenderContext(files=RepoFiles(paths=frozenset({"README.md", "index.html"}))))
    assert "http.server" in with_index and "def card_page" not in with_index


def test_a_step_failing_on_refused_egress_names_the_refused_host() -> None:
    """arnabd64/spacy-ner-hf-space: a requirement URL on github.com; the stage message said only 'fix requirements.txt'."""
    from builder.venv import _cause

    refused = ["build egress refused: github.com:443 is not an allowed package index host (allowed: pypi.org; "
               "the admin can add hosts with SPACEPORT_BUILD_EGRESS_ALLOW)"]
    cause = _cause("installing requirements.txt failed; fix requirements.txt", "error: Failed to download", refused)
    assert cause.startswith("installing requirements.txt failed") and "github.com:443" in cause
    assert "SPACEPORT_BUILD_EGRESS_ALLOW" in cause
    assert _cause("installing x failed", "error", []) == "installing x failed"


POETRY_EXPORT = ('folium==0.14.0 ; python_version >= "3.8" and python_version < "3.10"\n'
                 'wheel==0.40.0 ; platform_system == "Linux" and platform_machine == "x86_64" and '
                 'python_version >= "3.8" and python_version < "3.10"\n')


@pytest.mark.parametrize(("text", "expected"), [
    # AaronBarbosa12/twitter_sentiment_ml: a poetry export for python >=3.8,<3.10, every line marked
    ('folium==0.14.0 ; python_version >= "3.8" and python_version < "3.10"\n'
     'pandas==2.0.0 ; python_version >= "3.8" and python_version < "3.10"  # pinned\n', "3.9"),
    ('a==1 ; python_version >= "3.11"\n', "3.13"),
    ('a==1 ; python_version == "3.8"\n# comment\n\n', "3.8"),
    ('a==1 ; python_version < "3.10"\nb==2\n', None),  # an unmarked line: the file is meant for any Python
    ('a==1 ; python_version < "3.11"\n', None),  # the default (3.10) is admitted
    ('a==1 ; (python_version < "3.10" or sys_platform == "win32")\n', None),  # not understood: keep the default
    ('a==1 ; python_version < "3.10" and sys_platform == "darwin" or python_version < "3.10" and os_name == "nt"\n'
     'b==1 ; python_version == "3.9"\n', "3.9"),
    (POETRY_EXPORT, "3.9"),  # the real file's platform clauses are the same on every Python
    ('a==1 ; sys_platform == "linux"\n', None),  # says nothing of the Python
    ('a==1 ; python_version < "3.8"\nb==1 ; python_version > "3.11"\n', None),  # no Python admits both
    ("", None),
])
def test_requirements_marked_for_other_pythons_choose_the_python_they_were_written_for(
        text: str, expected: str | None) -> None:
    from builder.pythons import requirements_python

    assert requirements_python(text, "3.10") == expected


def test_local_build_uses_the_python_every_requirement_is_marked_for(tmp_path: Path) -> None:
    """Without it uv skipped every line on the default Python 3.10 and the app died on `No module named 'folium'`."""
    from builder.build import build

    source = tmp_path / "space"
    source.mkdir()
    (source / "README.md").write_text("---\nsdk: static\n---\n")
    (source / "index.html").write_text("<html><body>hi</body></html>\n")
    (source / "requirements.txt").write_text('six==1.16.0 ; python_version >= "3.8" and python_version < "3.10"\n')
    log: list[str] = []
    artifact = build(source, kind="venv", cache_dir=tmp_path / "cache", log=log.append)
    note = next(line for line in log if "every line of requirements.txt is marked" in line)
    assert "building with Python 3.9" in note
    assert isinstance(artifact, VenvArtifact)
    python = artifact.command[0]
    code = "import sys, six; print('%d.%d' % sys.version_info[:2])"
    ran = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    fallback = [line for line in log if line.startswith("warning: Python 3.9")]
    assert ran.returncode == 0 or fallback, ran.stderr  # six was installed (on 3.9, or the nearest with a warning)
    if not fallback:
        assert ran.stdout.strip() == "3.9"
