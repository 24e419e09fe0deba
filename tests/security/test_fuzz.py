"""Fuzz every operation of Spaceport's own OpenAPI schema with schemathesis against a live server.

Three callers: anonymous, a user who owns spaces, and an admin. Path parameters are steered half the time
towards the spaces and revisions that exist, so the fuzzer gets past 404s into the handlers.
Checks: no 5xx (nor a dropped connection), and responses match the schema where it declares them.
A longer pass that prints a table: `.venv/bin/python bench/fuzz.py`.
(schemathesis' own pytest integration of lazy schemas needs pytest < 9, so the cases are driven here.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.security import (
    Identity,
    OperationReport,
    create_space,
    fuzz_operation,
    load_schema,
    operations,
    static_files,
)
from tests.support.gitrepo import make_repo, push, remote
from tests.support.server import LiveServer, make_server

COMMIT_PATH = re.compile(r"^/api/spaces/[^/]+/[^/]+/(commit|preupload)/")
MAX_EXAMPLES = 5  # per operation, caller and mode (positive / negative); bench/fuzz.py runs more


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("fuzz")).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def identities(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    owner = Identity("alice", server.create_user("alice"))
    admin = Identity("root", server.create_user("root", admin=True))
    repo = make_repo(tmp_path_factory.mktemp("fuzz-repo") / "site", static_files("<h1>fuzz</h1>"))
    push(repo, remote(server.url, "alice", "site", "alice", owner.token))
    create_space(server, owner, "empty")
    return {"anonymous": Identity("anonymous", None), "owner": owner, "admin": admin}


def describe(reports: list[OperationReport]) -> str:
    lines = []
    for report in reports:
        for check, details in report.failures.items():
            lines.append(f"{report.label} as {report.caller}: {check}")
            lines.extend(f"    {d}" for d in details)
    return "\n".join(lines)


@pytest.mark.parametrize("who", ["anonymous", "owner", "admin"])
def test_every_operation_without_server_errors_or_schema_violations(
        server: LiveServer, identities: dict[str, Identity], who: str) -> None:
    schema = load_schema(server.url)
    ops = operations(schema)
    assert len(ops) >= 30, [op.label for op in ops]
    reports = [fuzz_operation(op, server.url, identities[who], MAX_EXAMPLES) for op in ops]
    assert all(r.examples > 0 for r in reports)
    failed = [r for r in reports if r.failures]
    assert not failed, describe(failed)


def test_server_still_healthy_after_fuzzing(server: LiveServer, identities: dict[str, Identity]) -> None:
    """Runs after the fuzz cases (file order): the controller answers and has logged no traceback."""
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert "Traceback" not in server.logs(), server.logs()[-5000:]


def body_operations(server: LiveServer) -> list[tuple[str, str]]:
    """(method, concrete path) of every operation whose schema takes a request body."""
    found = []
    for op in operations(load_schema(server.url)):
        if len(op.body) == 0:
            continue
        path = op.path.replace("{owner}", "alice").replace("{name}", "site")
        found.append((op.method.upper(), re.sub(r"\{[^}]+\}", "x", path)))
    return found


@pytest.mark.parametrize("who", ["anonymous", "owner"])
def test_every_body_taking_operation_enforces_the_size_and_depth_limits(
        server: LiveServer, identities: dict[str, Identity], who: str) -> None:
    """The limits hold on every operation the schema lists, before any handler or access check runs:
    a body past SPACEPORT_MAX_BODY_BYTES is 413, a 1,000-deep JSON body is 400 (never a 500 from recursion)."""
    ops = body_operations(server)
    assert len(ops) >= 10, ops
    headers = {**identities[who].headers, "content-type": "application/json"}
    big = b'{"x": "' + b"a" * (1_048_576 + 16) + b'"}'
    deep = b"[" * 1000 + b"]" * 1000
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for method, path in ops:
            if COMMIT_PATH.match(path):  # the commit API's own (100 MB) limit: tests/security/test_limits.py
                continue
            over = client.request(method, path, content=big, headers=headers)
            assert over.status_code == 413 and "SPACEPORT_MAX_BODY_BYTES" in over.text, (method, path, over.text[:200])
            nested = client.request(method, path, content=deep, headers=headers)
            assert nested.status_code == 400 and "SPACEPORT_MAX_JSON_DEPTH" in nested.text, (method, path, nested.text[:200])
