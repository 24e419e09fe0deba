"""Wake benchmark: an app's own cold start vs. time to first 200 through the proxy from light and deep sleep.

    .venv/bin/python bench/wake.py [--runs 3] [--fixtures gradio,streamlit] [--variants local,nosandbox,docker]

For each runtime variant (local sandboxed, local unsandboxed, docker when an engine is reachable through
SPACEPORT_TEST_DOCKER_HOST / DOCKER_HOST) one real `spaceport serve` runs on loopback; the Gradio and Streamlit
fixtures are pushed once, then per run:
  cold   restart_space (new instance, same artifact): from the instance's start to its first 200, polled
         directly on its port (the app's own start-up, no proxy, no health check);
  light  idle sweep as if 49 h passed -> frozen; one GET through the proxy until 200 (thaw);
  deep   idle sweep +49 h then +51 h -> stopped (process gone / container exited); one GET until 200;
  overhead = deep - cold (reconcile, health-check polling, routing, proxying).
Medians over --runs. Everything the servers started is removed at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _live import (
    Inspector,
    LiveServer,
    Variant,
    fmt,
    host_get,
    instances,
    live_server,
    log,
    median,
    prepare,
    print_table,
    push_fixture,
    sweep_ahead,
    variants,
    wait_for,
    wait_proxy,
    wait_stage,
    wait_url,
)

OWNER = "bench"
VARIANT_KEYS = {"local": "local (sandbox)", "nosandbox": "local (no sandbox)", "docker": "docker"}


@dataclass
class Samples:
    cold: list[float] = field(default_factory=list)
    light: list[float] = field(default_factory=list)
    deep: list[float] = field(default_factory=list)


def current(server: LiveServer, slug: str) -> str:
    """The newest instance of the space."""
    rows = instances(server, slug)
    if not rows:
        raise RuntimeError(f"{slug} has no instance")
    return rows[0][0]


def cold_start(server: LiveServer, token: str, name: str, probe: Inspector, path: str) -> float:
    """restart_space; seconds from the new instance's start (its row) to its first direct 200 on `path`."""
    slug = f"{OWNER}-{name}"
    before = {row[0] for row in instances(server, slug)}
    response = httpx.post(f"{server.url}/api/spaces/{OWNER}/{name}/restart",
                          headers={"authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    fresh: list[tuple[str, float]] = []

    def started() -> bool:
        fresh[:] = [(row[0], row[4]) for row in instances(server, slug) if row[0] not in before]
        return bool(fresh) and probe.endpoint(fresh[0][0]) is not None

    wait_for(f"a new instance of {slug}", started, timeout=120, interval=0.02)
    instance, started_at = fresh[0]
    endpoint = probe.endpoint(instance)
    assert endpoint is not None
    ready = wait_url(endpoint + path)
    wait_stage(server, f"{OWNER}/{name}", {"RUNNING"})
    return ready - started_at


def timed_visit(server: LiveServer, slug: str) -> float:
    start = time.monotonic()
    response = host_get(server, slug)
    if response.status_code != 200:  # held past the activator's bound: keep asking
        wait_proxy(server, slug)
    return time.monotonic() - start


def light_wake(server: LiveServer, name: str, probe: Inspector) -> float:
    slug = f"{OWNER}-{name}"
    instance = current(server, slug)
    sweep_ahead(server, 49)
    wait_stage(server, f"{OWNER}/{name}", {"SLEEPING"})
    wait_for(f"{instance} frozen", lambda: probe.frozen(instance))
    took = timed_visit(server, slug)
    wait_stage(server, f"{OWNER}/{name}", {"RUNNING"})
    return took


def deep_wake(server: LiveServer, name: str, probe: Inspector) -> float:
    slug = f"{OWNER}-{name}"
    instance = current(server, slug)
    sweep_ahead(server, 49)
    sweep_ahead(server, 51)
    wait_stage(server, f"{OWNER}/{name}", {"SLEEPING"})
    wait_for(f"{instance} stopped", lambda: probe.stopped(instance), timeout=60)
    took = timed_visit(server, slug)
    wait_stage(server, f"{OWNER}/{name}", {"RUNNING"})
    return took


def measure(server: LiveServer, token: str, fixture: str, runs: int, probe: Inspector) -> Samples:
    name = f"wake-{fixture}"
    path = f"/apps/{OWNER}/{name}/" if fixture == "streamlit" else "/"  # Streamlit serves under its base path
    with tempfile.TemporaryDirectory(prefix="spaceport-bench-repo-") as tmp:
        push_fixture(server, Path(tmp), fixture, OWNER, name, token)
    wait_stage(server, f"{OWNER}/{name}", {"RUNNING"})
    wait_proxy(server, f"{OWNER}-{name}")
    samples = Samples()
    for run in range(runs):
        samples.cold.append(cold_start(server, token, name, probe, path))
        samples.light.append(light_wake(server, name, probe))
        samples.deep.append(deep_wake(server, name, probe))
        log(f"  {fixture} run {run + 1}: cold {samples.cold[-1]:.2f} light {samples.light[-1]:.3f} "
            f"deep {samples.deep[-1]:.2f}")
    return samples


def row(variant: Variant, fixture: str, samples: Samples) -> list[str]:
    cold, deep = median(samples.cold), median(samples.deep)
    return [fixture, variant.name, fmt(cold), fmt(median(samples.light)), fmt(deep), fmt(deep - cold), ""]


def run_variant(variant: Variant, fixtures: list[str], runs: int) -> list[list[str]]:
    if variant.skip:
        return [[f, variant.name, *(["—"] * 4), f"skipped: {variant.skip}"] for f in fixtures]
    prepare(variant)
    rows: list[list[str]] = []
    with live_server(variant) as (server, token):
        probe = Inspector(server, variant)
        try:
            for fixture in fixtures:
                log(f"{variant.name}: {fixture}")
                rows.append(row(variant, fixture, measure(server, token, fixture, runs, probe)))
        finally:
            probe.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fixtures", default="gradio,streamlit")
    parser.add_argument("--variants", default="local,nosandbox,docker")
    args = parser.parse_args()
    wanted = {VARIANT_KEYS[k] for k in args.variants.split(",")}
    fixtures = args.fixtures.split(",")
    rows: list[list[str]] = []
    for variant in variants():
        if variant.name in wanted:
            rows += run_variant(variant, fixtures, args.runs)
    headers = ["app", "runtime", "cold start s", "light wake s", "deep wake s", "overhead s", "note"]
    print_table(f"Wake: seconds to first 200, median of {args.runs} runs (overhead = deep wake - cold start)",
                headers, rows)


if __name__ == "__main__":
    main()
