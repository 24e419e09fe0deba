"""Base images for docker-tier tests: `ensure_base_images(docker_host)` (idempotent, one bootstrap at a time).

Usage in a docker test:
    from tests.support.images import ensure_base_images
    ensure_base_images(docker_host)                  # spaceport/base-{python,sdk}:3.11, base-node:18 now exist
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
from pathlib import Path

import docker

from builder.baseimages import DEBIAN_BASE, UV_BASE, node_base, python_base, sdk_base
from builder.bootstrap import bootstrap_images

PYTHON_VERSIONS = ("3.11",)


def _lock_path(docker_host: str) -> Path:
    digest = hashlib.sha256(docker_host.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"spaceport-base-images-{digest}.lock"


def _present(client: docker.DockerClient) -> bool:
    names = [DEBIAN_BASE, *(python_base(v) for v in PYTHON_VERSIONS), *(sdk_base(v) for v in PYTHON_VERSIONS), node_base(),
             UV_BASE]
    try:
        for name in names:
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


def main() -> None:
    """`python -m tests.support.images`: bootstrap the bases before the suite, so no test's timeout pays for it
    (on a fresh machine it takes minutes, and the first docker test of each worker would wait on the lock)."""
    import os

    docker_host = os.environ.get("SPACEPORT_TEST_DOCKER_HOST")
    if docker_host:
        print("test base images: checking (a fresh machine builds them once, a few minutes)", flush=True)
        ensure_base_images(docker_host)


if __name__ == "__main__":
    main()
