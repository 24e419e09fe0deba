"""The security posture `spaceport serve` logs at start: one line per concern, warnings where it is weak."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import Settings
from controller.runtimes.local import LocalRuntime
from controller.runtimes.posture import security_posture


def posture(tmp_path: Path, **settings: object) -> list[str]:
    config = Settings(data_dir=tmp_path / "data", **settings)  # type: ignore[arg-type]
    runtime = LocalRuntime(tmp_path / "runtime", sandbox=config.sandbox)
    return security_posture(config, runtime)


def line(lines: list[str], topic: str) -> str:
    return next(item for item in lines if item.split(" ", 2)[1] == topic)


def test_default_posture_names_every_concern(tmp_path: Path) -> None:
    lines = posture(tmp_path, public_url="http://localhost:8000")
    assert [item.split(" ", 2)[1] for item in lines] == ["apps:", "builds:", "app", "egress:"]
    assert "path URLs redirect there" in line(lines, "app")
    assert "CGNAT" in line(lines, "egress:") and "pypi.org" in line(lines, "egress:")


def test_unsandboxed_apps_and_builds_warn(tmp_path: Path) -> None:
    lines = posture(tmp_path, sandbox="none", public_url="http://localhost:8000")
    assert line(lines, "apps:").startswith("WARNING") and "UNSANDBOXED" in line(lines, "apps:")
    assert line(lines, "builds:").startswith("WARNING")


@pytest.mark.parametrize(("extra", "warns"), [
    ({"path_apps": "trusted"}, "SPACEPORT_PATH_APPS=trusted"),
    ({"apps_domain": "apps.example.org", "public_url": "https://spaces.example.org"}, "shares a parent domain"),
])
def test_weak_app_origin_warns(tmp_path: Path, extra: dict[str, object], warns: str) -> None:
    origin = line(posture(tmp_path, **{"public_url": "http://localhost:8000", **extra}), "app")
    assert origin.startswith("WARNING") and warns in origin


def test_separate_apps_site_is_ok(tmp_path: Path) -> None:
    origin = line(posture(tmp_path, apps_domain="example.space", public_url="https://spaces.example.org"), "app")
    assert origin.startswith("OK") and "example.space" in origin
