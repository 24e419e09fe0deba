"""Options every `spaceport` command shares: the data directory, and the settings/platform it selects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from controller.config import Settings
from controller.services.platform import Platform

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default $SPACEPORT_DATA_DIR or ./.spaceport)")]


def settings_for(data_dir: Path | None = None, **overrides: object) -> Settings:
    if data_dir is not None:
        os.environ["SPACEPORT_DATA_DIR"] = str(data_dir.resolve())
    return Settings(**overrides)  # type: ignore[arg-type]


def platform_for(data_dir: Path | None) -> Platform:
    platform = Platform(settings_for(data_dir))
    platform.migrate()
    return platform
