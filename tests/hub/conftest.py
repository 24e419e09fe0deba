"""Hub API tests: a live `spaceport serve` driven through the real huggingface_hub client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import LiveServer, make_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pipeline: needs the build/run pipeline (spaces reach RUNNING)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("hub")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    return {name: server.create_user(name) for name in ("alice", "bob")}
