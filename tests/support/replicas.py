"""Several `spaceport serve` replicas of one site (PostgreSQL + Redis + a shared data dir), for the
replica tests and bench/replicas.py."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.support.server import LiveServer, free_port, server_env

# a build whose worker died with its replica is run again once its heartbeat is 6 s old (default 60 s)
FAST_RECOVERY = {"SPACEPORT_BUILD_STALE_AFTER": "6", "SPACEPORT_RECOVER_INTERVAL": "2"}


def replica(data_dir: Path, db_url: str, broker: str, **extra: str) -> LiveServer:
    port = free_port()
    env = server_env(data_dir, SPACEPORT_PUBLIC_URL=f"http://localhost:{port}", SPACEPORT_DATABASE_URL=db_url,
                     SPACEPORT_BROKER_URL=broker, **{**FAST_RECOVERY, **extra})
    return LiveServer(data_dir=data_dir, port=port, env=env)


def redis_db(url: str, number: int) -> str:
    """The same Redis server, another database number (queues apart; pub/sub channels are per site)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{number}"))


def role(server: LiveServer) -> str:
    try:
        return str(httpx.get(f"{server.url}/healthz", timeout=2).json()["role"])
    except httpx.HTTPError:
        return "down"


def wait_role(server: LiveServer, wanted: str, timeout: float) -> float:
    """Seconds until the replica reports `wanted` (leader, follower)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if role(server) == wanted:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{server.url} never became {wanted} (is {role(server)}):\n{server.logs()[-3000:]}")

