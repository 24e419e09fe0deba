"""Base images for docker-tier tests: `ensure_base_images(docker_host)` (idempotent, one bootstrap at a time).

Usage in a docker test:
    from tests.support.images import ensure_base_images
    ensure_base_images(docker_host)                  # spaceport/base-{python,sdk}:3.11, base-node:18 now exist
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import tempfile
from pathlib import Path

import docker

from builder.baseimages import DEBIAN_BASE, UV_BASE, node_base, python_base, sdk_base
from builder.bootstrap import bootstrap_images

PYTHON_VERSIONS = ("3.11",)
SUITE_DISK_GB = 25  # a clean clone's run took 17 GB of / at its peak (apt packages, venv, images, live servers' data)


def _lock_path(docker_host: str) -> Path:
    digest = hashlib.sha256(docker_host.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"spaceport-base-images-{digest}.lock"


def _base_names() -> list[str]:
    """The images the suite bootstraps; everything else in the test engine is a run's leftover."""
    return [DEBIAN_BASE, *(python_base(v) for v in PYTHON_VERSIONS), *(sdk_base(v) for v in PYTHON_VERSIONS),
            node_base(), UV_BASE]


def _present(client: docker.DockerClient) -> bool:
    try:
        for name in _base_names():
            client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_images(docker_host: str) -> None:
    """Bootstrap spaceport/base-debian:bookworm, base-python:3.11, base-sdk:3.11 and base-node:18 if missing."""
    client = docker.DockerClient(base_url=docker_host, timeout=600)
    try:
        if _present(client):
            return
        with _lock_path(docker_host).open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest workers wait for the first one
            try:
                if not _present(client):
                    bootstrap_images(client, python_versions=PYTHON_VERSIONS, progress=lambda _line: None)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        client.close()


def prune_leftovers(client: docker.DockerClient) -> tuple[int, int]:
    """Remove what earlier runs left in the test engine (containers, space and test images, build cache, unused
    networks and volumes) and keep the bases; a machine that runs the suite again must not fill its disk.
    Returns (containers, images) removed."""
    keep = set(_base_names())
    containers = images = 0
    for container in client.containers.list(all=True, ignore_removed=True):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)
            containers += 1
    for image in client.images.list():
        if keep.intersection(image.tags):
            continue
        for ref in image.tags or [image.id]:
            with contextlib.suppress(docker.errors.APIError):  # a base's parent layer cannot go: it stays
                client.images.remove(ref, force=True)
                images += 1
    client.api.prune_builds()
    client.networks.prune()
    client.volumes.prune()
    return containers, images


def main() -> None:
    """`python -m tests.support.images`: bootstrap the bases before the suite, so no test's timeout pays for it
    (on a fresh machine it takes minutes, and the first docker test of each worker would wait on the lock)."""
    import os

    docker_host = os.environ.get("SPACEPORT_TEST_DOCKER_HOST")
    if docker_host:
        print("test base images: checking (a fresh machine builds them once, a few minutes)", flush=True)
        ensure_base_images(docker_host)
        client = docker.DockerClient(base_url=docker_host, timeout=600)
        try:
            containers, images = prune_leftovers(client)
        finally:
            client.close()
        if containers or images:
            print(f"test engine: removed {containers} containers and {images} images left by earlier runs", flush=True)
    free_gb = shutil.disk_usage("/").free / 1e9
    if free_gb < SUITE_DISK_GB:
        print(f"WARNING: {free_gb:.0f} GB free on /; the suite needs about {SUITE_DISK_GB} GB, and tests that build "
              "will fail once the disk is full", flush=True)


if __name__ == "__main__":
    main()
