"""The builder's single entry point: a checked-out commit -> an Artifact (venv or image)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from builder import sdkdeps
from builder.artifact import Artifact
from builder.errors import BUILD_ERROR, BuildFailure
from builder.requirements import check_requirement_files
from builder.sandbox import BuildSandbox
from builder.spaceconfig import SpaceConfig, load_space_config

if TYPE_CHECKING:
    from builder.buildah import BuildahEngine
    from builder.venv import VenvPolicy


def build(
    source: Path,
    *,
    kind: Literal["venv", "image"],
    cache_dir: Path,
    log: Callable[[str], None],
    tag: str | None = None,
    client: Any = None,
    build_args: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
    mirror: str | None = None,
    ca_dir: Path | None = None,
    no_cache: bool = False,
    time_limit: float = 1800.0,
    cancel: threading.Event | None = None,
    owner: str = "",
    sandbox: BuildSandbox | None = None,
    network: str | None = None,
    container_limits: Mapping[str, int] | None = None,
    uv_seed: Path | None = None,
    venv_policy: VenvPolicy | None = None,
    push: bool = False,
    engine: BuildahEngine | None = None,
) -> Artifact:
    """Build `source` (a snapshot of one commit). Raises BuildFailure(stage, message) on any failure.

    kind="venv": uv environment under cache_dir, shared by dependency hash.
    kind="image": docker build with `client` (docker.DockerClient) into `tag` (spaceport/OWNER-NAME:SHA12);
    `aliases` (e.g. parsed SPACEPORT_BASE_IMAGE_ALIASES) extend and override the default base image
    aliases; `mirror` is SPACEPORT_REGISTRY_MIRROR; build_args are public variables only, never secrets.
    Owner code (build backends, RUN steps) runs in `sandbox` (venv) or in a build container limited by
    `container_limits` on docker network `network` (image). Environments and caches are per `owner`.
    Requirement lines pointing outside the repository are refused first (CONFIG_ERROR). `uv_seed`: a
    trusted (root-owned) uv cache that a new per-owner cache starts from (read-only to builds).
    `venv_policy`: the site's default Python, base packages and Python source for venvs (default: hosted).
    `engine`: build (and push) with buildah (builder/buildah.py) instead of a docker client.
    `push`: push the built image `tag` (then REGISTRY/SLUG:SHA12) to its registry (builder/registry.py).
    """
    config = load_space_config(source)
    log(f"space sdk: {config.sdk}" + (f" {config.sdk_version}" if config.sdk_version else "") + f", app: {config.app_file}")
    for note in config.notes:
        log(f"note: {note}")
    check_requirement_files(source)
    config = sdkdeps.with_requirements_pin(config, source, log)
    if kind == "venv":
        return _build_venv(source, config, cache_dir, log, no_cache, time_limit, cancel, ca_dir, owner, sandbox, uv_seed,
                           venv_policy)
    if kind == "image":
        if (client is None and engine is None) or not tag:
            raise ValueError("kind='image' needs a docker client or a buildah engine, and a tag")
        from builder.image import build_image

        image = build_image(
            source, config, client=client, tag=tag, build_args=build_args, aliases=aliases, mirror=mirror,
            ca_dir=ca_dir, log=log, no_cache=no_cache, time_limit=time_limit, cancel=cancel,
            network=network, container_limits=container_limits, engine=engine,
        )
        if push and engine is None:  # buildah pushes as part of its build
            from builder.registry import push_image

            push_image(client, image.image, log=log, cancel=cancel)
        return image
    raise ValueError(f"unknown build kind {kind!r}")


def _build_venv(source: Path, config: SpaceConfig, cache_dir: Path, log: Callable[[str], None], no_cache: bool,
                time_limit: float, cancel: threading.Event | None, ca_dir: Path | None, owner: str,
                sandbox: BuildSandbox | None, uv_seed: Path | None, policy: VenvPolicy | None) -> Artifact:
    if config.sdk == "docker":
        raise BuildFailure(
            BUILD_ERROR,
            "Docker spaces need SPACEPORT_RUNTIME=docker: this server runs spaces as local processes and "
            "cannot build a Dockerfile. Ask the admin to enable the docker runtime, or use sdk gradio/streamlit/static.",
        )
    from builder.venv import build_venv

    return build_venv(source, config, cache_dir=cache_dir, log=log, no_cache=no_cache, time_limit=time_limit,
                      cancel=cancel, ca_dir=ca_dir, owner=owner, sandbox=sandbox,
                      uv_seed=uv_seed, policy=policy)
