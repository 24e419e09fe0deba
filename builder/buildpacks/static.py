"""Static spaces: the repository served by Python's http.server (no SDK dependencies, plain Python base)."""

from __future__ import annotations

from datetime import datetime

from builder.buildpacks.base import APP_DIR, PythonAppBuildPack, RepoFiles
from builder.card import card_command
from builder.spaceconfig import SpaceConfig


class StaticBuildPack(PythonAppBuildPack):
    sdk = "static"

    def detect(self, files: RepoFiles) -> bool:
        return "index.html" in files.paths

    def base_image(self, config: SpaceConfig) -> str:
        return f"python:{config.python}-slim"  # only the interpreter: the slim base, as `python -m http.server` needs

    def dependency_layers(self, config: SpaceConfig, files: RepoFiles, release: datetime | None = None) -> list[str]:
        return []

    def command(self, config: SpaceConfig) -> list[str]:
        return ["sh", "-c", f'exec python -m http.server "${{PORT:-7860}}" --bind 0.0.0.0 --directory {APP_DIR}']

    def command_for(self, config: SpaceConfig, files: RepoFiles) -> list[str]:
        """Without index.html but with README.md: the README as the page (builder/card.py), as on HF."""
        if config.app_file != "index.html" or "index.html" in files.paths or "README.md" not in files.paths:
            return self.command(config)
        _python, _c, source, *_ = card_command("python", "", "", "")
        return ["sh", "-c", f'exec python -c "$0" "${{PORT:-7860}}" 0.0.0.0 {APP_DIR}', source]
