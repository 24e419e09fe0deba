from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import CONFIG_ERROR, NO_APP_FILE, SpaceConfigError
from builder.spaceconfig import MAX_README_BYTES, load_space_config, parse_duration, parse_front_matter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "spaces"


def write(repo: Path, files: dict[str, str]) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (repo / name).write_text(text)
    return repo


def test_gradio_fixture_front_matter() -> None:
    config = load_space_config(FIXTURES / "gradio")
    assert (config.sdk, config.title, config.emoji) == ("gradio", "Greet", "👋")
    assert (config.color_from, config.color_to) == ("blue", "green")
    assert config.tags == ["demo"]
    assert (config.app_file, config.app_port, config.startup_duration_timeout) == ("app.py", 7860, 1800)
    assert not config.inferred and config.notes == []


def test_docker_fixture_port_and_app_file() -> None:
    config = load_space_config(FIXTURES / "docker")
    assert (config.sdk, config.app_port) == ("docker", 8080)


def test_static_defaults_to_index_html() -> None:
    assert load_space_config(FIXTURES / "static").app_file == "index.html"


def test_broken_yaml_names_file_and_line() -> None:
    with pytest.raises(SpaceConfigError) as info:
        load_space_config(FIXTURES / "broken-yaml")
    assert info.value.stage == CONFIG_ERROR
    assert "README.md line 5" in info.value.message


def test_missing_app_file_names_it() -> None:
    with pytest.raises(SpaceConfigError) as info:
        load_space_config(FIXTURES / "missing-app-file")
    assert info.value.stage == NO_APP_FILE
    assert "main.py" in info.value.message


def test_unknown_sdk_lists_allowed(tmp_path: Path) -> None:
    repo = write(tmp_path, {"README.md": "---\nsdk: flask\n---\n", "app.py": ""})
    with pytest.raises(SpaceConfigError) as info:
        load_space_config(repo)
    assert info.value.stage == CONFIG_ERROR
    for sdk in ("gradio", "streamlit", "docker", "static", "flask"):
        assert sdk in info.value.message


def test_docker_sdk_without_dockerfile(tmp_path: Path) -> None:
    repo = write(tmp_path, {"README.md": "---\nsdk: docker\n---\n"})
    with pytest.raises(SpaceConfigError) as info:
        load_space_config(repo)
    assert info.value.stage == NO_APP_FILE and "Dockerfile" in info.value.message


@pytest.mark.parametrize(
    ("files", "sdk"),
    [
        ({"Dockerfile": "FROM python:3.11\n", "app.py": "import gradio\n"}, "docker"),
        ({"app.py": "import os\nimport streamlit as st\n"}, "streamlit"),
        ({"app.py": "from streamlit import title\n"}, "streamlit"),
        ({"app.py": "import gradio as gr\n"}, "gradio"),
        ({"index.html": "<h1>hi</h1>"}, "static"),
        ({"README.md": "# no front matter\n", "app.py": "import gradio\n"}, "gradio"),
    ],
)
def test_infers_sdk_and_notes_it(tmp_path: Path, files: dict[str, str], sdk: str) -> None:
    config = load_space_config(write(tmp_path, files))
    assert config.sdk == sdk and config.inferred
    assert any(f"inferred sdk={sdk}" in note for note in config.notes)


def test_nothing_to_run(tmp_path: Path) -> None:
    with pytest.raises(SpaceConfigError) as info:
        load_space_config(write(tmp_path, {"notes.txt": "x"}))
    assert info.value.stage == NO_APP_FILE


def test_ms_deploy_json(tmp_path: Path) -> None:
    deploy = {
        "sdk_type": "gradio", "sdk_version": "4.44.1", "port": 7861,
        "resource_configuration": "platform/2v-cpu-16g-mem",
        "environment_variables": [{"name": "MODE", "value": "demo"}],
    }
    repo = write(tmp_path, {"ms_deploy.json": json.dumps(deploy), "app.py": "import gradio\n"})
    config = load_space_config(repo)
    assert (config.sdk, config.sdk_version, config.app_port) == ("gradio", "4.44.1", 7861)
    assert config.suggested_hardware == "platform/2v-cpu-16g-mem"
    assert config.env == {"MODE": "demo"}
    assert not config.inferred


def test_bad_values_say_what_to_fix(tmp_path: Path) -> None:
    repo = write(tmp_path, {"README.md": "---\nsdk: gradio\napp_port: 99999\n---\n", "app.py": ""})
    with pytest.raises(SpaceConfigError, match="app_port"):
        load_space_config(repo)
    (repo / "README.md").write_text("---\nsdk: gradio\nstartup_duration_timeout: soon\n---\n")
    with pytest.raises(SpaceConfigError, match="startup_duration_timeout"):
        load_space_config(repo)


def test_all_hf_keys(tmp_path: Path) -> None:
    readme = """---
title: All
sdk: streamlit
sdk_version: 1.39.0
python_version: "3.11"
app_file: src/main.py
base_path: /docs
suggested_hardware: t4-small
startup_duration_timeout: 1h
custom_headers:
  cross-origin-embedder-policy: require-corp
pinned: true
models: [openai-community/gpt2]
datasets: [mnist]
license: mit
---
"""
    repo = write(tmp_path, {"README.md": readme})
    write(repo / "src", {"main.py": "import streamlit\n"})
    config = load_space_config(repo)
    assert config.sdk_version == "1.39.0" and config.python == "3.11"
    assert config.app_file == "src/main.py" and config.base_path == "/docs"
    assert config.startup_duration_timeout == 3600 and config.pinned
    assert config.custom_headers == {"cross-origin-embedder-policy": "require-corp"}
    assert (config.models, config.datasets, config.license) == (["openai-community/gpt2"], ["mnist"], "mit")


def test_parse_front_matter_strings() -> None:
    assert parse_front_matter("# title only\n") == {}
    assert parse_front_matter("---\n---\nbody") == {}
    assert parse_front_matter("---\nsdk: gradio\ntags: [a, b]\n---\n# body\n---\n") == {"sdk": "gradio", "tags": ["a", "b"]}
    with pytest.raises(SpaceConfigError, match="never closed"):
        parse_front_matter("---\nsdk: gradio\n")
    with pytest.raises(SpaceConfigError, match="mapping"):
        parse_front_matter("---\n- a\n- b\n---\n")
    with pytest.raises(SpaceConfigError, match="1 MB"):
        parse_front_matter("---\nsdk: gradio\n---\n" + "x" * (MAX_README_BYTES + 1))


def test_parse_duration() -> None:
    assert [parse_duration(v) for v in ("30m", "1h", "90s", "45", 120)] == [1800, 3600, 90, 45, 120]
    with pytest.raises(ValueError):
        parse_duration("1 week")
