"""Streamlit spaces: headless on the port, embeddable in an iframe (no XSRF/CORS checks, like HF)."""

from __future__ import annotations

from builder.buildpacks.base import CONTAINER_PORT, STREAMLIT_IMPORT, PythonAppBuildPack, RepoFiles
from builder.spaceconfig import SpaceConfig

STREAMLIT_FLAGS = (
    "--server.headless", "true",
    "--server.enableXsrfProtection", "false",
    "--server.enableCORS", "false",
)


class StreamlitBuildPack(PythonAppBuildPack):
    sdk = "streamlit"

    def detect(self, files: RepoFiles) -> bool:
        return "app.py" in files.paths and bool(STREAMLIT_IMPORT.search(files.texts.get("app.py", "")))

    def command(self, config: SpaceConfig) -> list[str]:
        return ["python", "-m", "streamlit", "run", config.app_file, *STREAMLIT_FLAGS]

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "STREAMLIT_SERVER_PORT": str(CONTAINER_PORT),
            "STREAMLIT_SERVER_ADDRESS": "0.0.0.0",
            "STREAMLIT_SERVER_HEADLESS": "true",
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        }
