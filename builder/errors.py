"""Typed build errors whose messages tell the user what to fix."""

from __future__ import annotations

from typing import Final

CONFIG_ERROR: Final = "CONFIG_ERROR"
NO_APP_FILE: Final = "NO_APP_FILE"
BUILD_ERROR: Final = "BUILD_ERROR"
STAGES: Final = (CONFIG_ERROR, NO_APP_FILE, BUILD_ERROR)


class BuildFailure(Exception):
    """A build ended in `stage` (CONFIG_ERROR, NO_APP_FILE or BUILD_ERROR) for `message`."""

    def __init__(self, stage: str, message: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown build failure stage {stage!r}")
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class SpaceConfigError(BuildFailure):
    """The space's configuration (README front matter, ms_deploy.json, files) is unusable."""


class BuildCancelled(BuildFailure):
    """The build was cancelled by the caller (a newer push, a delete)."""

    def __init__(self, message: str = "build cancelled") -> None:
        super().__init__(BUILD_ERROR, message)
