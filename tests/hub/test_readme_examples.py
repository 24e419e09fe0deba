"""The README's huggingface_hub example runs as written, with the huggingface_hub we install, against a
live server (only the endpoint and TOKEN are filled in), and does what its comments say."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from tests.support.server import LiveServer, make_server

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_example() -> str:
    text = README.read_text()
    section = text[text.index("### Hugging Face clients"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Hugging Face clients section has no python block"
    return match.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("readme")).start()
    yield srv
    srv.close()


def test_the_hugging_face_clients_example_runs_as_written(server: LiveServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    token = server.create_user("alice")
    hello = tmp_path / "hello"  # the quick start's app, as the README makes it
    hello.mkdir()
    (hello / "README.md").write_text("---\ntitle: Hello\nemoji: 👋\nsdk: gradio\n---\n")
    (hello / "app.py").write_text('import gradio as gr\ngr.Interface(lambda name: f"Hello {name}!", "text", "text").launch()\n')
    code = readme_python_example().replace('"http://localhost:8000"', repr(server.url))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"TOKEN": token})  # our own README
    api = HfApi(endpoint=server.url, token=token)
    assert {f for f in api.list_repo_files("alice/demo", repo_type="space")} >= {"README.md", "app.py"}
    assert api.space_info("alice/demo-copy").id == "alice/demo-copy"
    assert api.get_space_runtime("alice/demo").stage in {"BUILDING", "APP_STARTING", "RUNNING", "RUNNING_APP_STARTING"}
