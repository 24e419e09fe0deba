"""Registry benchmark (issue 14): push from node A and pull on node B, per image.

    . ./.test-env.sh && .venv/bin/python bench/registry.py [--images spaceport/base-debian:bookworm ...]

A fresh Debian docker-registry (tests/support/registry.py) and a second dockerd as node B
(tests/support/nodes.py, needs root). Each image of the test engine (node A) is tagged under the registry
and pushed with builder/registry.push_image (a fresh registry: every layer is sent); node B then pulls it
with DockerRuntime.ensure_image (what a start does when the image is missing). Times are wall clock on
this machine: the engine compresses layers on push, so a loaded CPU shows directly.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import docker
from _live import fmt, log, print_table

from builder.artifact import ImageArtifact
from builder.registry import push_image
from controller.runtimes.base import InstanceSpec
from controller.runtimes.docker import DockerRuntime
from tests.support.nodes import second_engine
from tests.support.registry import local_registry

DEFAULT_IMAGES = ("spaceport/base-debian:bookworm", "spaceport/base-python:3.11")


def measure(client: docker.DockerClient, runtime: DockerRuntime, registry: str, image: str) -> list[str]:
    source = client.images.get(image)
    ref = f"{registry}/spaces/bench-{image.split('/')[-1].replace(':', '-')}:0123456789ab"
    source.tag(*ref.rsplit(":", 1))
    try:
        started = time.monotonic()
        push_image(client, ref, log=lambda _line: None)
        pushed = time.monotonic() - started
        started = time.monotonic()
        runtime.ensure_image(InstanceSpec(name="bench", space_id="bench/x", artifact=ImageArtifact(image=ref, port=1)))
        pulled = time.monotonic() - started
    finally:
        client.images.remove(ref)
    size = (source.attrs.get("Size") or 0) / 1048576
    return [image, f"{size:7.0f}", fmt(pushed), fmt(pulled)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES))
    args = parser.parse_args()
    client = docker.DockerClient(base_url=os.environ["SPACEPORT_TEST_DOCKER_HOST"], timeout=600)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, local_registry(Path(tmp) / "registry") as registry, \
            second_engine() as node_b:
        runtime = DockerRuntime(node_b, site="bench", registry=f"{registry}/spaces")
        try:
            for image in args.images:
                log(f"push and pull {image}")
                rows.append(measure(client, runtime, registry, image))
        finally:
            runtime.close()
    client.close()
    print_table("Registry: push from node A, pull on node B (fresh registry, nothing cached)",
                ["image", "MiB", "push s", "pull on B s"], rows)


if __name__ == "__main__":
    main()
