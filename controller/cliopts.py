"""Options every `spaceport` command shares: the data directory, and the settings/platform it selects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from controller.config import Settings, UnknownSettingError
from controller.services.platform import Platform

SETTINGS_ERROR_EXIT = 2  # like a usage error: the command line's environment is wrong

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default $SPACEPORT_DATA_DIR or ./.spaceport)")]


def settings_for(data_dir: Path | None = None, **overrides: object) -> Settings:
    """The site's settings; an unknown SPACEPORT_* variable ends the command (exit 2) naming the closest setting."""
    if data_dir is not None:
        os.environ["SPACEPORT_DATA_DIR"] = str(data_dir.resolve())
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except UnknownSettingError as exc:
        raise typer.Exit(report_unknown_settings(exc)) from None


def report_unknown_settings(exc: UnknownSettingError) -> int:
    """Print the error on stderr; the exit code to end with."""
    typer.echo(f"error: {exc.message}", err=True)
    return SETTINGS_ERROR_EXIT


def platform_for(data_dir: Path | None) -> Platform:
    platform = Platform(settings_for(data_dir))
    platform.migrate()
    return platform
