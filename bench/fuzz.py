"""Fuzz benchmark: a longer schemathesis pass over every API operation, as anonymous, owner and admin.

Run: .venv/bin/python bench/fuzz.py [EXAMPLES]   (default 50 per operation, caller and mode)
Starts its own server (stopped at the end) and prints a table: operation, caller, examples, failures by check.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.security import (  # noqa: E402
    Identity,
    OperationReport,
    create_space,
    fuzz_operation,
    load_schema,
    operations,
    static_files,
)
from tests.support.gitrepo import make_repo, push, remote  # noqa: E402
from tests.support.server import LiveServer, make_server  # noqa: E402


def prepare(server: LiveServer, tmp: Path) -> list[Identity]:
    owner = Identity("alice", server.create_user("alice"))
    admin = Identity("root", server.create_user("root", admin=True))
    repo = make_repo(tmp / "site", static_files("<h1>fuzz</h1>"))
    push(repo, remote(server.url, "alice", "site", "alice", owner.token))
    create_space(server, owner, "empty")
    return [Identity("anonymous", None), owner, admin]


def table(reports: list[OperationReport], seconds: float) -> str:
    rows = [("operation", "caller", "examples", "failures by check")]
    for r in reports:
        failures = "; ".join(f"{check}: {len(details)}" for check, details in r.failures.items()) or "-"
        rows.append((r.label, r.caller, str(r.examples), failures))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
    total = sum(r.examples for r in reports)
    failed = sum(1 for r in reports if r.failures)
    lines.append(f"\n{len({r.label for r in reports})} operations, {total} examples in {seconds:.0f} s, "
                 f"{failed} operation/caller pairs with failures")
    for r in reports:
        for check, details in r.failures.items():
            lines.append(f"\n{r.label} as {r.caller}: {check}")
            lines.extend(f"    {d}" for d in details)
    return "\n".join(lines)


def main() -> int:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as tmp:
        server = make_server(Path(tmp)).start()
        try:
            callers = prepare(server, Path(tmp))
            start = time.perf_counter()
            schema = load_schema(server.url)
            reports = [fuzz_operation(op, server.url, who, examples) for who in callers for op in operations(schema)]
            print(table(reports, time.perf_counter() - start))
        finally:
            server.stop()
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
