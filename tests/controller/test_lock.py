"""Spaceport's own dependencies are locked (requirements.lock, installed by `make serve`/`make test`), and the
lock agrees with pyproject.toml: every declared dependency is pinned there at a version its specifier
allows. Changing pyproject.toml without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)")


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if found := PIN.match(line):
            pins[canonicalize_name(found.group(1).split("[")[0])] = found.group(2)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_every_declared_dependency_is_pinned_at_an_allowed_version() -> None:
    pins = locked()
    assert len(pins) > 50
    for requirement in declared():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, pyproject.toml wants {requirement.specifier}: run `make lock`")


def test_the_lock_says_how_it_was_made_and_the_makefile_installs_it() -> None:
    makefile = (ROOT / "Makefile").read_text()
    command = re.search(r"^LOCK_CMD := (.+)$", makefile, re.M)
    assert command is not None
    assert f"#    {command.group(1)}" in (ROOT / "requirements.lock").read_text()
    assert "-r requirements.lock" in makefile and "--no-deps -e ." in makefile
