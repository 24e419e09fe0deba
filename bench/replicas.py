"""Replica benchmark (issue 14): route propagation between two `spaceport serve` replicas and leader failover.

    . ./.test-env.sh && .venv/bin/python bench/replicas.py [--runs 5]

Two replicas of one site on the test PostgreSQL (a fresh database) and Redis, with a shared data dir and
the default reconcile interval (5 s), so what is measured is the bus, not the periodic reload:
  pause -> 503   from the pause API call on the leader to the follower's proxy answering 503 (paused);
  restart -> 200 from the restart API call on the follower to its proxy answering 200 (new instance);
  takeover       from SIGKILL of the leader (serve + its worker) to the follower reporting "leader";
  served after   whether the app answered 200 through the survivor right after the takeover.
After each takeover the killed replica is started again (it follows). Medians over --runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx
from _live import fmt, log, median, print_table

from tests.security import host_get, static_files
from tests.support.databases import fresh_database
from tests.support.gitrepo import make_repo, push, remote
from tests.support.replicas import redis_db, replica, wait_role
from tests.support.server import LiveServer
from tests.support.spaces import wait_stage


def until_status(server: LiveServer, slug: str, status: int, timeout: float = 120) -> float:
    started = time.monotonic()
    while host_get(server, slug, timeout=10).status_code != status:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{slug} never answered {status} through {server.url}")
        time.sleep(0.005)
    return time.monotonic() - started


def propagation(leader: LiveServer, follower: LiveServer, token: str) -> tuple[float, float]:
    headers = {"authorization": f"Bearer {token}"}
    httpx.post(f"{leader.url}/api/spaces/bench/demo/pause", headers=headers, timeout=10).raise_for_status()
    paused = until_status(follower, "bench-demo", 503)
    httpx.post(f"{follower.url}/api/spaces/bench/demo/restart", headers=headers, timeout=10).raise_for_status()
    return paused, until_status(follower, "bench-demo", 200)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pg, redis = os.environ.get("SPACEPORT_TEST_PG_URL"), os.environ.get("SPACEPORT_TEST_REDIS_URL")
    if not (pg and redis):
        raise SystemExit("needs SPACEPORT_TEST_PG_URL and SPACEPORT_TEST_REDIS_URL: run `. ./.test-env.sh` first")
    with tempfile.TemporaryDirectory(prefix="spaceport-bench-") as tmp, fresh_database(pg) as db_url:
        env = {"SPACEPORT_RECONCILE_INTERVAL": "5"}
        servers = [replica(Path(tmp) / "data", db_url, redis_db(redis, 8), **env) for _ in range(2)]
        try:
            servers[0].start(timeout=120)
            wait_role(servers[0], "leader", 30)
            servers[1].start(timeout=120)
            wait_role(servers[1], "follower", 30)
            token = servers[0].create_user("bench")
            push(make_repo(Path(tmp) / "demo", static_files("bench")), remote(servers[0].url, "bench", "demo", "bench", token))
            wait_stage(servers[0], "bench/demo", {"RUNNING"}, timeout=180)
            rows = [run_once(servers, token, i) for i in range(args.runs)]
        finally:
            for server in servers:
                server.close()
    keys = ("pause -> 503", "restart -> 200", "takeover")
    table = [[key, fmt(median([r[key] for r in rows])), fmt(min(r[key] for r in rows)), fmt(max(r[key] for r in rows))]
             for key in keys]
    table.append(["served after takeover", f"{sum(r['served'] for r in rows):.0f}/{len(rows)}", "", ""])
    print_table(f"Two replicas, PostgreSQL + Redis, {args.runs} runs", ["measure", "median", "min", "max"], table)


def run_once(servers: list[LiveServer], token: str, i: int) -> dict[str, float]:
    leader, follower = (servers[0], servers[1]) if i % 2 == 0 else (servers[1], servers[0])
    wait_role(leader, "leader", 30)
    paused, restarted = propagation(leader, follower, token)
    started = time.monotonic()
    leader.kill()
    wait_role(follower, "leader", 30)
    takeover = time.monotonic() - started
    served = float(host_get(follower, "bench-demo", timeout=10).status_code == 200)
    leader.start(timeout=120)
    wait_role(leader, "follower", 30)
    log(f"run {i + 1}: pause {fmt(paused)}, restart {fmt(restarted)}, takeover {fmt(takeover)}")
    return {"pause -> 503": paused, "restart -> 200": restarted, "takeover": takeover, "served": served}


if __name__ == "__main__":
    main()
