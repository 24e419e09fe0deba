"""Docker spaces: the user's own Dockerfile (FROM resolution and CA trust are applied by builder.image)."""

from __future__ import annotations

from builder.buildpacks.base import BuildPack, RenderContext, RepoFiles
from builder.errors import NO_APP_FILE, BuildFailure
from builder.spaceconfig import DOCKERFILE_NAMES, SpaceConfig


class DockerBuildPack(BuildPack):
    sdk = "docker"

    def detect(self, files: RepoFiles) -> bool:
        return any(name in files.paths for name in DOCKERFILE_NAMES)

    def render(self, config: SpaceConfig, ctx: RenderContext) -> str:
        if ctx.dockerfile is None:
            raise BuildFailure(NO_APP_FILE, "Dockerfile not found: Docker spaces need a Dockerfile at the repository root")
        return ctx.dockerfile
