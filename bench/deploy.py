"""Deploy benchmark: `git push` to the first 200 through the proxy, first push and code-only change.

    .venv/bin/python bench/deploy.py [--runs 3] [--variants local,nosandbox,docker]

For each runtime variant (local sandboxed, local unsandboxed, docker when an engine is reachable through
SPACEPORT_TEST_DOCKER_HOST / DOCKER_HOST) one real `spaceport serve` runs on loopback. Per run:
  first  push the gradio fixture to a new space, with a requirements.txt holding a unique comment so the
         environment key is new: a cold venv (uv download cache warm) or an image whose dependency layers
         are not cached; timed until the proxy answers 200;
  change push a code-only change (the Interface title) to that running space: the environment/dependency
         layers are reused and the new instance is swapped in; timed until /config shows the new title.
Breakdown (seconds from the start of `git push`): push returned, build done (the build's finished_at),
instance started (the new instance's row), ready (first 200 through the proxy). Medians over --runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from _live import (
    FIXTURES,
    LiveServer,
    Variant,
    builds,
    fmt,
    instances,
    live_server,
    log,
    median,
    prepare,
    print_table,
    variants,
    wait_proxy,
    wall,
)

from tests.support.gitrepo import commit_file, make_repo, push, remote

OWNER = "bench"
VARIANT_KEYS = {"local": "local (sandbox)", "nosandbox": "local (no sandbox)", "docker": "docker"}
PHASES = ("push", "build", "started", "ready")


@dataclass
class Timeline:
    """Seconds from the start of `git push` to each phase, one list per phase (one entry per run)."""

    phases: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})

    def add(self, **moments: float) -> None:
        for phase, seconds in moments.items():
            self.phases[phase].append(seconds)


def app_source(title: str) -> str:
    text = (FIXTURES / "gradio" / "app.py").read_text()
    return text.replace('outputs="text")', f'outputs="text", title="{title}")')


def timed_push(server: LiveServer, repo: Path, name: str, token: str, marker: str, timeline: Timeline) -> None:
    """Push, wait for `marker` in the app's /config through the proxy, record the phases."""
    slug = f"{OWNER}-{name}"
    known = {row[0] for row in instances(server, slug)}
    start = wall()
    push(repo, remote(server.url, OWNER, name, OWNER, token))
    pushed = wall()
    ready = wait_proxy(server, slug, marker=marker, path="/config", interval=0.05)
    build = builds(server, OWNER, name)[0]
    fresh = [row for row in instances(server, slug) if row[0] not in known]
    started = fresh[-1][4] if fresh else float("nan")
    finished = build[3] if build[3] is not None else float("nan")
    timeline.add(push=pushed - start, build=finished - start, started=started - start, ready=ready - start)


def one_run(server: LiveServer, token: str, work: Path, run: int, first: Timeline, change: Timeline) -> None:
    name = f"deploy-{run}"
    marker = f"bench-{uuid.uuid4().hex[:8]}"
    files = {
        "README.md": (FIXTURES / "gradio" / "README.md").read_text(),
        "app.py": app_source(marker),
        "requirements.txt": f"# bench {marker}: a new environment key, so a cold venv / dependency layer\n",
    }
    repo = make_repo(work / name, files)
    timed_push(server, repo, name, token, marker, first)
    marker = f"bench-{uuid.uuid4().hex[:8]}"
    commit_file(repo, "app.py", app_source(marker), "code-only change")
    timed_push(server, repo, name, token, marker, change)
    log(f"  run {run + 1}: first ready {first.phases['ready'][-1]:.2f} s, change ready "
        f"{change.phases['ready'][-1]:.2f} s")


def rows_for(variant: Variant, first: Timeline, change: Timeline) -> list[list[str]]:
    out = []
    for label, timeline in (("first push (cold env)", first), ("code-only change (swap)", change)):
        out.append([variant.name, label, *(fmt(median(timeline.phases[p])) for p in PHASES)])
    return out


def run_variant(variant: Variant, runs: int) -> list[list[str]]:
    if variant.skip:
        return [[variant.name, f"skipped: {variant.skip}", *(["—"] * len(PHASES))]]
    prepare(variant)
    first, change = Timeline(), Timeline()
    log(f"{variant.name}")
    with live_server(variant) as (server, token), tempfile.TemporaryDirectory(prefix="spaceport-bench-") as tmp:
        for run in range(runs):
            one_run(server, token, Path(tmp), run, first, change)
            time.sleep(1)  # let the retired instance of the swap go before the next run
    return rows_for(variant, first, change)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default="local,nosandbox,docker")
    args = parser.parse_args()
    wanted = {VARIANT_KEYS[k] for k in args.variants.split(",")}
    rows: list[list[str]] = []
    for variant in variants():
        if variant.name in wanted:
            rows += run_variant(variant, args.runs)
    headers = ["runtime", "deploy", "push returned s", "build done s", "instance started s", "ready (200) s"]
    print_table(f"Deploy (gradio fixture): seconds from `git push` start, median of {args.runs} runs", headers, rows)


if __name__ == "__main__":
    main()
