"""Old-version Spaces build and run unchanged on the LOCAL runtime too (issue 21's offline tier, sandboxed).

The same fixtures as tests/controller/test_oldrepos_live.py (docker): gradio 3.x `gr.inputs`, `import
pkg_resources`, `from huggingface_hub import HfFolder`, unpinned transitive dependencies, and (4.x) a
requirements.txt naming another gradio than `sdk_version`. Here they build into a sandboxed venv and run
in bubblewrap: they must reach RUNNING, serve their UI through the proxy, see the hosted run environment
(SYSTEM=spaces, HOME=/home/user, a writable app dir, their own uid) and get the libraries of their time.
The server keeps the lean test defaults (Python 3.11, base package `requests`) so the builds stay small;
the install plan (sdk pin last, constraints, --exclude-newer at the release) is the hosted one.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.controller.test_oldrepos_live import ENV_CHECK, SETTLED, build_log, page
from tests.support.server import LiveServer, make_server
from tests.support.spaces import push_fixture, wait_stage

pytestmark = pytest.mark.timeout(1800)  # venv builds from PyPI


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("oldrepos-local"), SPACEPORT_RUNTIME="local").start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.create_user("olduser")


def venv_python(server: LiveServer, log: str) -> str:
    """The environment the build log says it made or reused (a sealed venv under the data dir)."""
    found = re.search(r"(?:creating|reusing) environment ([0-9a-f]{16})", log)
    assert found is not None, log[-3000:]
    return str(server.data_dir / "artifacts" / "venvs" / found.group(1) / "bin" / "python")


@pytest.mark.parametrize(
    ("fixture", "name", "version", "dated"),
    [("old-gradio3", "sentiment", "3.35.2", "2023-06-"), ("old-gradio4", "squares", "4.8.0", "2023-12-")],
)
def test_old_gradio_space_runs_sandboxed_with_the_libraries_of_its_time(
    server: LiveServer, token: str, tmp_path: object, fixture: str, name: str, version: str, dated: str,
) -> None:
    space = f"olduser/{name}"
    push_fixture(server, tmp_path, fixture, "olduser", name, token)  # type: ignore[arg-type]
    state = wait_stage(server, space, SETTLED, timeout=1500)
    log = build_log(server, space, token)
    assert state["stage"] == "RUNNING", (state, log[-4000:])
    assert "the sdk_version pin is installed last, so it wins over requirements.txt" in log, log[-3000:]
    assert f"unpinned dependencies resolve as of {dated}" in log, log[-3000:]
    found = ENV_CHECK.search(page(server, f"olduser-{name}"))
    assert found is not None
    system, home, uid, writable, gradio = found.groups()
    assert (system, home, writable, gradio) == ("spaces", "/home/user", "True", version)  # the sdk pin won
    assert int(uid) >= 100_000  # the space's own unprivileged uid, never root
    # pip and setuptools with pkg_resources, as the hosted images' Python 3.10 has (gradio 3 imports
    # pkg_resources; an app's `pip install` at start needs the venv's pip)
    # setuptools before pip: pip's locations module imports the stdlib distutils on Python < 3.12, and
    # setuptools then refuses it (so does any `python -m venv` with both; apps import setuptools first)
    probe = "import huggingface_hub, setuptools, pkg_resources, pip; print(huggingface_hub.__version__, setuptools.__version__)"
    done = subprocess.run([venv_python(server, log), "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    assert int(out[0].split(".")[0]) == 0, out  # huggingface_hub < 1 (HfFolder)
    assert all(int(v.split(".")[0]) < 81 for v in out[1:]), out  # pkg_resources still there
