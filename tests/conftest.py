"""Shared test fixtures: the service tiers (Docker, Redis, PostgreSQL, Chromium).

`make test` runs scripts/test-services.sh first, which starts what it can and exports
SPACEPORT_TEST_* variables. A tier that is missing is skipped locally, but under CI=true it fails,
so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from controller.config import Settings
from controller.services.platform import Platform
from tests.support.tiers import missing


def _require(var: str, what: str) -> str:
    value = os.environ.get(var, "")
    if value:
        return value
    message = f"{what} is not available ({var} unset; run scripts/test-services.sh or `make test`)"
    missing(message)


@pytest.fixture(scope="session")
def docker_host() -> str:
    """DOCKER_HOST of the test Docker engine."""
    return _require("SPACEPORT_TEST_DOCKER_HOST", "Docker engine")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require("SPACEPORT_TEST_REDIS_URL", "Redis")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """SQLAlchemy URL of the test PostgreSQL server (a superuser; tests create their own databases)."""
    return _require("SPACEPORT_TEST_PG_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return _require("SPACEPORT_TEST_CHROMIUM", "Chromium")


@pytest.fixture(params=["sqlite", "postgres"])
def db_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """A migrated Platform on SQLite, and on a fresh PostgreSQL database (dropped afterwards)."""
    url, admin, name = "", None, ""
    if request.param == "postgres":
        base = make_url(request.getfixturevalue("pg_url"))
        name = f"t_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
    platform = Platform(Settings(data_dir=tmp_path / "data", database_url=url))
    platform.migrate()
    yield platform
    platform.dispose()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
