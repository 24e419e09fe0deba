"""Issue 20: every command that reads the site's state takes --data-dir (README: "Every CLI command honours
SPACEPORT_DATA_DIR (or --data-dir)"), and it is the data dir the command then uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from controller.cli import app

# Commands that never touch a data dir: they talk to a running server or only to the host's devices.
NO_DATA_DIR = {"logs": "reads logs from a server's API (--url)", "accelerators detect": "asks nvidia-smi/npu-smi"}


def commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf commands by their full name (typer may use its own click: duck-typed)."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            found.update(commands(command, f"{path} "))
        else:
            found[path] = command
    return found


def test_every_command_that_reads_the_site_takes_data_dir() -> None:
    every = commands(typer.main.get_group(app))
    assert {"serve", "quota set", "accelerators add", "images bootstrap", "remove-all-instances"} <= set(every)
    lacking = [name for name, command in every.items()
               if name not in NO_DATA_DIR and not any("--data-dir" in p.opts for p in command.params)]
    assert not lacking, f"commands without --data-dir: {lacking}"


@pytest.mark.parametrize("argv", [["quota", "list"], ["accelerators", "list"]])
def test_data_dir_selects_the_database(tmp_path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACEPORT_DATABASE_URL", raising=False)
    monkeypatch.setenv("SPACEPORT_DATA_DIR", str(tmp_path / "elsewhere"))
    result = CliRunner().invoke(app, [*argv, "--data-dir", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site" / "spaceport.db").is_file() and not (tmp_path / "elsewhere").exists()
