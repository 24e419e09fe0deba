"""The explicit, ordered buildpack chain: Docker > Gradio > Streamlit > Static."""

from __future__ import annotations

from builder.buildpacks.base import BuildPack, RenderContext, RepoFiles
from builder.buildpacks.docker import DockerBuildPack
from builder.buildpacks.gradio import GradioBuildPack
from builder.buildpacks.static import StaticBuildPack
from builder.buildpacks.streamlit import StreamlitBuildPack
from builder.spaceconfig import SpaceConfig

CHAIN: tuple[BuildPack, ...] = (DockerBuildPack(), GradioBuildPack(), StreamlitBuildPack(), StaticBuildPack())


def for_config(config: SpaceConfig) -> BuildPack:
    """The pack for the configured sdk."""
    return next(pack for pack in CHAIN if pack.sdk == config.sdk)


def detect(files: RepoFiles) -> BuildPack | None:
    """The first pack whose detect() matches, or None."""
    return next((pack for pack in CHAIN if pack.detect(files)), None)


__all__ = ["CHAIN", "BuildPack", "RenderContext", "RepoFiles", "detect", "for_config"]
