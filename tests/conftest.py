"""Shared test fixtures: the service tiers (Docker, Redis, PostgreSQL, Chromium).

`make test` runs scripts/test-services.sh first, which starts what it can and exports
SPACEPORT_TEST_* variables. A tier that is missing is skipped locally, but under CI=true it fails,
so CI can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import Settings
from controller.services.platform import Platform
from tests.support.browser import without_netlink
from tests.support.databases import fresh_database
from tests.support.tiers import missing
from tests.support.tls import share_default_context

share_default_context()


def _require(var: str, what: str) -> str:
    value = os.environ.get(var, "")
    if value:
        return value
    message = f"{what} is not available ({var} unset; run scripts/test-services.sh or `make test`)"
    missing(message)


# The slowest files (live servers, builds) first: under `--dist loadfile` each worker takes the next file
# when it is done, so a slow file started last keeps one worker busy while the other idles (longest first
# makes that tail short). Order: every file over 18 s in a `make test PYTEST_ARGS=--durations=0` run with 3
# workers; a file not listed keeps its place after these, a renamed one just loses its own.
SLOW_FIRST = (
    "tests/builder/test_venv.py", "tests/volumes/test_live.py", "tests/controller/test_run_live.py",
    "tests/reliability/test_faults.py", "tests/security/test_bad_input.py", "tests/security/test_fuzz.py",
    "tests/runtimes/test_spaceport_image.py", "tests/controller/test_oldrepos_live.py",
    "tests/zerogpu/test_zerogpu_live.py", "tests/controller/test_docker_live.py",
    "tests/reliability/test_secrets.py", "tests/security/test_secret_leaks.py", "tests/web/test_browser.py",
    "tests/hub/test_hub_client.py", "tests/oauth/test_browser.py", "tests/builder/test_image.py",
    "tests/security/test_app_isolation.py", "tests/runtimes/test_registry_live.py",
    "tests/runtimes/test_contract.py", "tests/controller/test_quotas_live.py", "tests/runtimes/test_sandbox.py",
    "tests/reliability/test_replicas.py", "tests/security/test_build_sandbox.py",
    "tests/controller/test_oldrepos_local_live.py", "tests/security/test_abuse.py", "tests/proxy/test_gradio.py",
    "tests/builder/test_buildah.py", "tests/git_lfs/test_git_lfs_attacks.py", "tests/oauth/test_flow.py",
    "tests/zerogpu/test_device_api_reach.py", "tests/web/test_pages.py", "tests/git_lfs/test_git_lfs_live.py",
    "tests/security/test_egress.py", "tests/security/test_storage_limits.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: files stay whole


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Under `make test`, each failure is logged the moment it happens, with the free disk then, so a run that
    hangs or cascades still shows which test failed first and why (scripts/test-diagnostics.sh prints it)."""
    log = os.environ.get("SPACEPORT_TEST_FAILURES")
    if not log or not report.failed or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the xdist controller sees every worker's reports; log there only
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else report.longreprtext
    first = next((line for line in text.splitlines() if line.strip()), "")
    free_gb = shutil.disk_usage("/").free / 1e9
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"{time.strftime('%H:%M:%S')} free {free_gb:.1f} GB  {report.nodeid} [{report.when}] {first}\n")


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
def chromium_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An executable that runs the test Chromium blind to the host's interface changes (support/nonetlink.py)."""
    return str(without_netlink(Path(_require("SPACEPORT_TEST_CHROMIUM", "Chromium")), tmp_path_factory.mktemp("chromium")))


@pytest.fixture(params=["sqlite", "postgres"])
def db_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """A migrated Platform on SQLite, and on a fresh PostgreSQL database (dropped afterwards)."""
    with contextlib.ExitStack() as stack:
        url = ""
        if request.param == "postgres":
            url = stack.enter_context(fresh_database(request.getfixturevalue("pg_url")))
        platform = Platform(Settings(data_dir=tmp_path / "data", database_url=url))
        platform.migrate()
        yield platform
        platform.dispose()
