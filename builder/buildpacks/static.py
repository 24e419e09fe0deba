"""Static spaces: the repository served by Python's http.server."""

from __future__ import annotations

from builder.buildpacks.base import APP_DIR, PythonAppBuildPack, RepoFiles
from builder.spaceconfig import SpaceConfig


class StaticBuildPack(PythonAppBuildPack):
    sdk = "static"

    def detect(self, files: RepoFiles) -> bool:
        return "index.html" in files.paths

    def sdk_requirements(self, config: SpaceConfig) -> list[str]:
        return []

    def dependency_layers(self, config: SpaceConfig, files: RepoFiles) -> list[str]:
        return []

    def command(self, config: SpaceConfig) -> list[str]:
        return ["sh", "-c", f'exec python -m http.server "${{PORT:-7860}}" --bind 0.0.0.0 --directory {APP_DIR}']
