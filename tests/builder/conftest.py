from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "spaces"


@pytest.fixture
def space(tmp_path: Path):
    """Copy a fixture space into a fresh folder: space("gradio") -> Path."""

    counter = iter(range(1000))

    def make(name: str) -> Path:
        target = tmp_path / f"{name}-{next(counter)}"
        shutil.copytree(FIXTURES / name, target)
        return target

    return make
