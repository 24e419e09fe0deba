"""The server's access log never holds a credential from a URL: query strings (Git LFS's signed links, the
sign-in bridge's token, whatever a client puts there) nor ZeroGPU capabilities in device API paths."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from controller.accesslog import redacted
from tests.support.server import LiveServer, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("accesslog")).start()
    yield srv
    srv.close()


def test_query_strings_never_reach_the_access_log(server: LiveServer) -> None:
    value = secrets.token_urlsafe(24)
    for path in (f"/api/spaces?search={value}", f"/__spaceport__/auth?token={value}",
                 f"/spaces/alice/x.git/info/lfs/objects/abc?sig={value}&exp=1", f"/zerogpu/{value}/schedule"):
        httpx.get(server.url + path, timeout=30, headers={"Host": "alice-x.localhost"} if "auth" in path else {})
    log = server.logs()
    assert value not in log
    assert '"GET /api/spaces?… HTTP/1.1"' in log and '"GET /zerogpu/…/schedule HTTP/1.1"' in log  # the paths stay


@pytest.mark.parametrize(("url", "logged"), [("/a/b", "/a/b"), ("/a?x=1", "/a?…"), ("/zerogpu/c4p/allow", "/zerogpu/…/allow"),
                                             ("/zerogpu/c4p?x", "/zerogpu/…?…"), ("/apps/zerogpu/x", "/apps/zerogpu/x")])
def test_redaction(url: str, logged: str) -> None:
    assert redacted(url) == logged
