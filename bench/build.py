"""Build benchmark: cold and warm (code-only change) builds of the gradio fixture, venv and image paths.

Run: .venv/bin/python bench/build.py [--no-image]
The "sandboxed" venv rows build as the controller does (bubblewrap, per-owner build uid and uv cache,
index-only egress proxy; needs root): cold with an empty owner cache, cold seeded from the trusted uv
cache (~/.cache/uv, SPACEPORT_BUILD_UV_SEED), and warm.
The image rows run only when SPACEPORT_TEST_DOCKER_HOST or DOCKER_HOST is set (base images are
bootstrapped first if missing; that time is reported separately).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.build import build  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "spaces" / "gradio"
Row = tuple[str, str, float, str]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def code_change(source: Path) -> None:
    app = source / "app.py"
    app.write_text(app.read_text() + f"\n# touched {time.time()}\n")


def venv_rows(work: Path) -> list[Row]:
    source = work / "venv-src"
    shutil.copytree(FIXTURE, source)
    cache = work / "venv-cache"
    quiet: Callable[[str], None] = lambda _line: None  # noqa: E731
    cold = timed(lambda: build(source, kind="venv", cache_dir=cache, log=quiet))
    code_change(source)
    warm = timed(lambda: build(source, kind="venv", cache_dir=cache, log=quiet))
    note = "fresh venv cache dir; shared uv download cache"
    return [("venv", "cold", cold, note), ("venv", "warm (code-only change)", warm, "reuses environment")]


def sandboxed_rows(work: Path) -> list[Row]:
    from controller.config import Settings
    from controller.runtimes.buildbox import build_box_config, build_sandbox_status, open_build_sandbox

    if not build_sandbox_status().available:
        return [("venv", "sandboxed: skipped", 0.0, build_sandbox_status().reason)]
    quiet: Callable[[str], None] = lambda _line: None  # noqa: E731
    settings = Settings(data_dir=work / "sandboxed-data")
    settings.data_dir.mkdir(parents=True)
    seed = Path.home() / ".cache" / "uv"
    rows: list[Row] = []
    for owner, what, use_seed in (("bench-cold", "sandboxed cold", None), ("bench-seeded", "sandboxed cold, seeded", seed)):
        source = work / f"{owner}-src"
        shutil.copytree(FIXTURE, source)

        def once(owner: str = owner, source: Path = source, use_seed: Path | None = use_seed) -> None:
            with open_build_sandbox(build_box_config(settings), owner, quiet) as box:
                build(source, kind="venv", cache_dir=settings.artifacts_dir, log=quiet, owner=owner, sandbox=box,
                      uv_seed=use_seed)

        cold = timed(once)
        note = ("empty owner uv cache: downloads everything, compiles all bytecode" if use_seed is None else
                "another owner, same requirements: uv cache from ~/.cache/uv, bytecode linked from the first's")
        rows.append(("venv", what, cold, note))
        code_change(source)
        rows.append(("venv", f"{what[:9]} warm", timed(once), "reuses the owner's sealed environment"))
    return rows


def image_rows(work: Path, docker_host: str) -> list[Row]:
    import docker

    from builder.bootstrap import bootstrap_images

    client = docker.DockerClient(base_url=docker_host, timeout=900)
    rows: list[Row] = []
    try:
        boot = timed(lambda: bootstrap_images(client, progress=lambda _line: None))
        rows.append(("image", "base image bootstrap", boot, "idempotent; ~50 s when nothing exists"))
        source = work / "image-src"
        shutil.copytree(FIXTURE, source)
        quiet: Callable[[str], None] = lambda _line: None  # noqa: E731
        tag = "spaceport/bench-gradio:latest"
        cold = timed(lambda: build(source, kind="image", cache_dir=work, log=quiet, tag=tag, client=client, no_cache=True))
        code_change(source)
        warm = timed(lambda: build(source, kind="image", cache_dir=work, log=quiet, tag=tag, client=client))
        rows.append(("image", "cold", cold, "no layer cache; pip downloads gradio"))
        rows.append(("image", "warm (code-only change)", warm, "dependency layers from cache"))
        client.images.remove(tag, force=True)
    finally:
        client.close()
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spaceport-bench-") as tmp:
        rows = venv_rows(Path(tmp))
        rows += sandboxed_rows(Path(tmp))
        docker_host = os.environ.get("SPACEPORT_TEST_DOCKER_HOST") or os.environ.get("DOCKER_HOST")
        if docker_host and "--no-image" not in sys.argv:
            rows += image_rows(Path(tmp), docker_host)
        else:
            rows.append(("image", "skipped", 0.0, "set SPACEPORT_TEST_DOCKER_HOST or DOCKER_HOST"))
    print(f"{'path':<6} | {'build':<24} | {'seconds':>8} | notes")
    print(f"{'-' * 6}-|-{'-' * 24}-|-{'-' * 8}-|{'-' * 40}")
    for path, what, seconds, note in rows:
        print(f"{path:<6} | {what:<24} | {seconds:>8.2f} | {note}")


if __name__ == "__main__":
    main()
