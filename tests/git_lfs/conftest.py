"""Git LFS tests: a live `spaceport serve`, the real git and git-lfs clients, and huggingface_hub."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.hub.conftest import reap
from tests.support.server import LiveServer, make_server
from tests.support.tiers import missing


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if shutil.which("git-lfs") is None:
        missing("git-lfs is not installed (Debian package git-lfs; scripts/test-services.sh installs it)")
    srv = make_server(tmp_path_factory.mktemp("lfs")).start()
    yield srv
    srv.close()
    reap(srv.data_dir)


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    return {name: server.create_user(name) for name in ("alice", "bob", "mallory")}
