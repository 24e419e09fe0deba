"""API scale benchmark: 10,000 spaces in a fresh database; how fast are the listing and info endpoints,
and how long does one reconciler pass (which loads every space) take?

    .venv/bin/python bench/api_scale.py [--spaces 10000] [--requests 50] [--pg URL]

SQLite always; PostgreSQL too when --pg or SPACEPORT_TEST_PG_URL gives a server (a throw-away database
is created and dropped). Requests go through the real ASGI app (create_app) in-process with httpx's
ASGI transport, as anonymous and as a logged-in user (token), so routing, auth, queries and JSON
rendering are all counted, but not the network. Prints p50/p99 per request kind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.app import create_app  # noqa: E402
from controller.config import Settings  # noqa: E402
from controller.db.models import Account, Space, utcnow  # noqa: E402
from controller.services import accounts  # noqa: E402
from controller.services.platform import Platform  # noqa: E402
from tests.support.databases import fresh_database  # noqa: E402

USERS = 200
SDKS = ("gradio", "streamlit", "static", "docker")


def populate(platform: Platform, spaces: int) -> str:
    """USERS users owning `spaces` spaces (10 % private); returns a write token of user0."""
    with platform.tx() as session:
        user0 = accounts.create_user(session, "user0", password="bench-password")
        token = accounts.create_token(session, user0, "bench", "write")
        session.execute(insert(Account), [{"name": f"user{i}", "kind": "user"} for i in range(1, USERS)])
    with platform.tx() as session:
        ids: dict[str, int] = {str(r[0]): int(r[1]) for r in session.execute(text("SELECT name, id FROM accounts"))}
        now = utcnow()
        rows = [{"owner_id": ids[f"user{i % USERS}"], "name": f"space-{i}", "slug": f"user{i % USERS}-space-{i}",
                 "sdk": SDKS[i % len(SDKS)], "private": i % 10 == 0, "created_at": now, "updated_at": now,
                 "card_data": {"title": f"Space {i}"}, "desired": "running", "stage": "NO_APP_FILE"}
                for i in range(spaces)]
        for start in range(0, len(rows), 2000):
            session.execute(insert(Space), rows[start:start + 2000])
    return token


async def time_requests(app: object, token: str, count: int) -> list[tuple[str, list[float]]]:
    kinds = [
        ("list (default limit 100), anonymous", "/api/spaces", None),
        ("list (default limit 100), user", "/api/spaces", token),
        ("list author=user7", "/api/spaces?author=user7", None),
        ("list search=space-99", "/api/spaces?search=space-99", None),
        ("list sdk=gradio, offset 2000", "/api/spaces?sdk=gradio&offset=2000", None),
        ("list limit=1000", "/api/spaces?limit=1000", None),
        ("space_info", "/api/spaces/user7/space-7", None),
        ("runtime", "/api/spaces/user7/space-7/runtime", None),
    ]
    results = []
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for label, path, auth in kinds:
            headers = {"authorization": f"Bearer {auth}"} if auth else {}
            times = []
            for _ in range(count):
                start = time.perf_counter()
                response = await client.get(path, headers=headers)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (path, response.status_code, response.text[:200])
            results.append((label, times))
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(backend: str, database_url: str, spaces: int, count: int) -> list[list[str]]:
    with tempfile.TemporaryDirectory(prefix="spaceport-apiscale-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=database_url, reconcile_interval=3600)
        platform = Platform(settings)
        platform.migrate()
        start = time.perf_counter()
        token = populate(platform, spaces)
        insert_s = time.perf_counter() - start
        app = create_app(settings, platform=platform)
        rows = [[backend, f"insert {spaces} spaces", f"{insert_s * 1000:.0f}", "", "1"]]
        for label, times in asyncio.run(time_requests(app, token, count)):
            rows.append([backend, label, f"{statistics.median(times):.1f}", f"{pct(times, 0.99):.1f}", str(len(times))])
        passes = []
        reconciler = app.state.reconciler
        for _ in range(3):
            start = time.perf_counter()
            asyncio.run(reconciler.reconcile_once())
            passes.append((time.perf_counter() - start) * 1000)
        rows.append([backend, "reconciler pass (all spaces; 1st writes stages)", f"{statistics.median(passes):.0f}",
                     f"{max(passes):.0f}", str(len(passes))])
        platform.dispose()
        return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--pg", default=os.environ.get("SPACEPORT_TEST_PG_URL", ""))
    args = parser.parse_args()
    rows = measure("sqlite", "", args.spaces, args.requests)
    if args.pg:
        with fresh_database(args.pg) as url:
            rows += measure("postgres", url, args.spaces, args.requests)
    else:
        print("(PostgreSQL skipped: no --pg / SPACEPORT_TEST_PG_URL)")
    print_table(["db", "what", "p50 ms", "p99 ms", "n"], rows)


if __name__ == "__main__":
    main()
