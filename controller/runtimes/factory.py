"""Choose and build the configured runtime (and the Docker client builds use)."""

from __future__ import annotations

from typing import Any

from controller.config import Settings


def docker_client(docker_host: str = "") -> Any:
    import docker

    return docker.DockerClient(base_url=docker_host or None, timeout=300)
