"""Fuzz every operation of Spaceport's own OpenAPI schema with schemathesis against a live server.

Three callers: anonymous, a user who owns spaces, and an admin. Path parameters are steered half the time
towards the spaces and revisions that exist, so the fuzzer gets past 404s into the handlers.
Checks: no 5xx (nor a dropped connection), and responses match the schema where it declares them.
A longer pass that prints a table: `.venv/bin/python bench/fuzz.py`.
(schemathesis' own pytest integration of lazy schemas needs pytest < 9, so the cases are driven here.)
"""

from __future__ import annotations

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

pytestmark = pytest.mark.xdist_group("security-fuzz")
MAX_EXAMPLES = 5  # per operation, caller and mode (positive / negative); bench/fuzz.py runs more


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("fuzz")).start()
    yield srv
    srv.stop()


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
