"""Gradio spaces: `python app_file` with GRADIO_SERVER_NAME/PORT from the environment."""

from __future__ import annotations

from builder.buildpacks.base import STREAMLIT_IMPORT, PythonAppBuildPack, RepoFiles
from builder.spaceconfig import SpaceConfig


class GradioBuildPack(PythonAppBuildPack):
    sdk = "gradio"

    def detect(self, files: RepoFiles) -> bool:
        return "app.py" in files.paths and not STREAMLIT_IMPORT.search(files.texts.get("app.py", ""))

    def command(self, config: SpaceConfig) -> list[str]:
        return ["python", config.app_file]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "GRADIO_ANALYTICS_ENABLED": "False"}
