"""ZeroGPU scheduler benchmark: what the device API adds to each `@spaces.GPU` call, and queue waits.

    .venv/bin/python bench/zerogpu.py [--calls 300] [--hold 0.05] [--rounds 20]

One process: a real Platform on SQLite in a temporary directory, the real ZeroGpu service and the device
API app (controller.api.zerogpu.device_app) served by uvicorn on loopback, driven over HTTP with httpx in
the request shapes of the `spaces` package (0.51.x): POST /schedule, /allow (with a pid of the
instance's own process tree, resolved through /proc as in production), /release. No GPU is touched: a
call "holds" its device for --hold seconds. Worker kills on hand-over are disabled (the bench's stand-in
worker is shared by all calls of a space), everything else is the production path, database writes
included (three small transactions per call).

Rows:
  sequential       one space, one device, calls one after the other: the scheduler's added latency per
                   call (schedule + allow + release round trips) and calls/s;
  parallel         4 spaces on 4 devices, each calling in a loop: aggregate calls/s;
  contention N     N spaces on ONE device, each calling in a loop and holding it --hold s: queue wait from
                   /schedule to the grant (the event stream's `succeeded`), and how many calls overlapped
                   on the device (must be 0: served in turn, never at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy.orm import Session

from controller.api import zerogpu as api
from controller.config import Settings
from controller.db.models import Build, Instance, Space
from controller.domain import zerogpu as dz
from controller.services import quotas
from controller.services import zerogpu as zs
from controller.services.accounts import create_user
from controller.services.platform import Platform

SITE = "http://bench.zerogpu"
SUPERVISOR = ("import subprocess, sys, time\n"
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
              "print(c.pid, flush=True); time.sleep(3600)\n")


@dataclass
class Space_:
    name: str
    instance: str
    capability: str
    supervisor: subprocess.Popen[str]
    worker: int


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # whole call overhead (no hold)
    waits: list[float] = field(default_factory=list)  # schedule -> grant
    overlaps: int = 0
    holders: int = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def zero_instance(session: Session, owner_id: int, name: str, owner: str) -> str:
    """A zero-a10g space with a built commit and a ready instance row (what the device API checks)."""
    space = Space(owner_id=owner_id, name=name, slug=f"{owner}-{name}", requested_hardware="zero-a10g")
    session.add(space)
    session.flush()
    build = Build(space_id=space.id, commit_sha="0" * 40, status="succeeded")
    session.add(build)
    session.flush()
    instance = f"sp-{owner}-{name}-{build.id}-1"
    session.add(Instance(space_id=space.id, build_id=build.id, name=instance, runtime="local", state="ready"))
    return instance


def setup(tmp: Path, spaces: int, devices: int) -> tuple[Platform, list[Space_]]:
    platform = Platform(Settings(data_dir=tmp / "data", public_url=SITE, zerogpu_device_api_url=SITE))
    platform.migrate()
    made: list[Space_] = []
    with platform.tx() as session:
        owner = create_user(session, "bench")
        for index in range(devices):
            zs.add_device(session, quotas.catalog(platform), "nvidia-a10g", index, f"GPU-bench-{index}")
        zs.set_defaults(session, anonymous=10**9, signed_in=10**9, max_duration=60)
        for index in range(spaces):
            instance = zero_instance(session, owner.id, f"s{index}", "bench")
            proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            worker = int(proc.stdout.readline())
            made.append(Space_(f"bench/s{index}", instance, dz.instance_capability(platform.settings.key, instance),
                               proc, worker))
    return platform, made


async def one_call(http: httpx.AsyncClient, space: Space_, stats: Stats, hold: float) -> None:
    """schedule (queueing if busy) -> allow -> hold -> release, as the package does it."""
    base = f"/zerogpu/{space.capability}"
    params: dict[str, str | int | bool] = {"cgroupPath": "/", "taskId": 1, "enableQueue": True, "tokenVersion": 2, "durationSeconds": 5}
    start = time.perf_counter()
    async with http.stream("POST", f"{base}/schedule", params=params) as res:
        if res.headers["content-type"].startswith("application/json"):
            body = json.loads(await res.aread())
        else:
            body = await _queued(res)
    granted = time.perf_counter()
    allowed = await http.post(f"{base}/allow", params={"allowToken": body["allowToken"], "pid": space.worker})
    assert allowed.status_code == 200, allowed.text
    stats.holders += 1
    stats.overlaps += stats.holders > 1 and hold > 0  # only meaningful when all share one device
    before_hold = time.perf_counter()
    if hold:
        await asyncio.sleep(hold)
    stats.holders -= 1
    after_hold = time.perf_counter()
    released = await http.post(f"{base}/release", params={"allowToken": body["allowToken"]})
    assert released.status_code == 200, released.text
    end = time.perf_counter()
    stats.waits.append(granted - start)
    stats.latencies.append((before_hold - start) + (end - after_hold))


async def _queued(res: httpx.Response) -> dict[str, object]:
    async for chunk in res.aiter_text():
        for event in chunk.split("\n\n"):
            if event.startswith("event: succeeded"):
                return dict(json.loads(event.split("data: ", 1)[1]))
            if event.startswith("event: failed"):
                raise RuntimeError("queued call failed (queue timeout)")
    raise RuntimeError("the queue stream ended without a grant")


async def loop_calls(http: httpx.AsyncClient, space: Space_, stats: Stats, calls: int, hold: float) -> None:
    for _ in range(calls):
        await one_call(http, space, stats, hold)


async def scenario(spaces: int, devices: int, calls: int, hold: float) -> tuple[Stats, float]:
    with tempfile.TemporaryDirectory(prefix="zerogpu-bench-") as tmp:
        platform, made = setup(Path(tmp), spaces, devices)
        by_instance = {s.instance: s.supervisor.pid for s in made}
        zero = zs.ZeroGpu(platform, supervisor_pid=by_instance.get, kill=lambda _pid, _start: None)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(api.device_app(zero), host="127.0.0.1", port=port, lifespan="off",
                                               log_level="warning", access_log=False))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        stats = Stats()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
                await one_call(http, made[0], Stats(), 0)  # warm-up (imports, first transaction)
                start = time.perf_counter()
                await asyncio.gather(*(loop_calls(http, s, stats, calls, hold) for s in made))
                elapsed = time.perf_counter() - start
        finally:
            server.should_exit = True
            await task
            for s in made:
                s.supervisor.kill()
                subprocess.run(["kill", "-9", str(s.worker)], check=False)
                s.supervisor.wait()
            platform.dispose()
    return stats, elapsed


def ms(values: list[float], q: float) -> str:
    if not values:
        return "—"
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls in the sequential row")
    parser.add_argument("--hold", type=float, default=0.05, help="seconds each contention call holds the GPU")
    parser.add_argument("--rounds", type=int, default=20, help="calls per space in the parallel/contention rows")
    args = parser.parse_args()
    rows: list[list[str]] = []
    cases = [("sequential (1 space, 1 GPU)", 1, 1, args.calls, 0.0), ("parallel (4 spaces, 4 GPUs)", 4, 4, args.rounds * 4, 0.0),
             *((f"contention ({n} spaces, 1 GPU, hold {args.hold:g}s)", n, 1, args.rounds, args.hold) for n in (2, 4))]
    for label, spaces, devices, calls, hold in cases:
        stats, elapsed = asyncio.run(scenario(spaces, devices, calls, hold))
        total = len(stats.latencies)
        rows.append([label, str(total), f"{total / elapsed:.0f}", f"{1000 * statistics.median(stats.latencies):.1f}",
                     ms(stats.latencies, 0.95), f"{1000 * statistics.median(stats.waits):.1f}", ms(stats.waits, 0.95),
                     f"{1000 * max(stats.waits):.1f}", str(stats.overlaps) if hold else "—"])
    headers = ["scenario", "calls", "calls/s", "added ms p50", "added ms p95", "wait ms p50", "wait ms p95",
               "wait ms max", "overlaps"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("\nZeroGPU device API (schedule + allow + release over HTTP, SQLite)")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print("\nadded = the call's time minus its hold: the scheduler's cost, queue wait included; wait = /schedule to grant.")


if __name__ == "__main__":
    main()
