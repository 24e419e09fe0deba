"""Docker spaces: the user's own Dockerfile (FROM resolution and CA trust are applied by builder.image)."""

from __future__ import annotations

from builder.buildpacks.base import BuildPack, RenderContext, RepoFiles
from builder.errors import NO_APP_FILE, BuildFailure
from builder.spaceconfig import SpaceConfig


class DockerBuildPack(BuildPack):
    sdk = "docker"

    def detect(self, files: RepoFiles) -> bool:
        return "Dockerfile" in files.paths

    def render(self, config: SpaceConfig, ctx: RenderContext) -> str:
        if ctx.dockerfile is None:
            raise BuildFailure(NO_APP_FILE, "Dockerfile not found: Docker spaces need a Dockerfile at the repository root")
        return ctx.dockerfile
