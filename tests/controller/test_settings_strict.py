"""Issue 14: settings are strict. An unknown SPACEPORT_* variable (the k8s manifests once set
SPACEPORT_REDIS_URL, which silently left the queue on the embedded broker) stops every command that builds
Settings, naming the variable and the closest real setting; every real setting, the known non-settings
variables and the test tooling's reserved SPACEPORT_TEST_* are accepted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller import cli
from controller.cli import app
from controller.config import (
    ENV_PREFIX,
    OTHER_VARIABLES,
    RESERVED_PREFIX,
    Settings,
    UnknownSettingError,
    check_environment,
    setting_variables,
    unknown_settings,
)

ROOT = Path(__file__).resolve().parents[2]
# SPACEPORT_ strings in the repository that are no variable: a cookie name, and prefixes in prose.
NOT_VARIABLES = {"SPACEPORT_SESSION", "SPACEPORT_BUILD_", "SPACEPORT_TEST_"}
# Settings the documentation names as planned, not yet real (k8s/README.md says so): only in *.md files.
PLANNED = {"SPACEPORT_REGISTRY"}


@pytest.fixture(autouse=True)
def _no_site_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the settings-free environment it describes (test shells export SPACEPORT_*)."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) and not name.upper().startswith(RESERVED_PREFIX):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("variable", "closest"), [
    ("SPACEPORT_REDIS_URL", "SPACEPORT_BROKER_URL"),
    ("SPACEPORT_BASE_URL", "SPACEPORT_PUBLIC_URL"),
    ("SPACEPORT_DATADIR", "SPACEPORT_DATA_DIR"),
    ("SPACEPORT_APP_DOMAIN", "SPACEPORT_APPS_DOMAIN"),
    ("spaceport_runtimee", "SPACEPORT_RUNTIME"),  # pydantic-settings matches without regard to case: so do we
])
def test_unknown_variable_is_an_error_naming_the_closest_setting(
        variable: str, closest: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(variable, "x")
    with pytest.raises(UnknownSettingError) as caught:
        Settings(data_dir=tmp_path)
    assert caught.value.names == [variable]
    assert caught.value.message == (f"Unknown setting {variable}: did you mean {closest}? "
                                    "(all settings: README.md, section Configuration)")


def test_a_name_like_no_setting_says_so() -> None:
    with pytest.raises(UnknownSettingError, match="SPACEPORT_FROBNICATE_WIDGETS: no setting has a similar name"):
        check_environment({"SPACEPORT_FROBNICATE_WIDGETS": "yes"})


def test_a_k8s_spelling_points_at_the_kubernetes_setting() -> None:
    with pytest.raises(UnknownSettingError, match="did you mean SPACEPORT_KUBERNETES_NAMESPACE_PREFIX"):
        check_environment({"SPACEPORT_K8S_NAMESPACE_PREFIX": "spaceport-"})


def test_every_unknown_variable_is_named_at_once() -> None:
    environ = {"SPACEPORT_REDIS_URL": "redis://r", "SPACEPORT_BASE_URL": "http://x", "SPACEPORT_RUNTIME": "local"}
    with pytest.raises(UnknownSettingError) as caught:
        check_environment(environ)
    assert caught.value.names == ["SPACEPORT_BASE_URL", "SPACEPORT_REDIS_URL"]
    assert len(caught.value.message.splitlines()) == 2


def test_every_real_setting_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each field set through its variable to its default (or a valid value) builds Settings."""
    values = {"data_dir": str(tmp_path), "hardware_catalog": str(ROOT / "k8s/base/hardware.yaml"),
              "build_uv_seed": str(tmp_path / "seed"), "build_store": str(tmp_path / "store")}
    for name, field in Settings.model_fields.items():
        value = values.get(name, field.default)
        assert value is not None, f"give {name} a valid value in this test"
        monkeypatch.setenv(ENV_PREFIX + name.upper(), str(value))
    settings = Settings()
    assert settings.data_dir == tmp_path.resolve() and settings.build_uv_seed == tmp_path / "seed"
    assert unknown_settings(os.environ) == []


def test_other_variables_and_the_reserved_test_prefix_are_accepted() -> None:
    environ = dict.fromkeys([*OTHER_VARIABLES, "SPACEPORT_TEST_PG_URL", "SPACEPORT_TEST_ANYTHING_NEW"], "x")
    check_environment(environ)
    assert not [n for n in Settings.model_fields if (ENV_PREFIX + n.upper()).startswith(RESERVED_PREFIX)], (
        "no setting may start with the reserved SPACEPORT_TEST_ prefix")
    assert not set(OTHER_VARIABLES) & set(setting_variables())


def test_other_variables_are_really_read_outside_settings() -> None:
    """The allowlist does not rot: each name is used by code other than config.py."""
    sources = "".join(p.read_text() for d in ("controller", "builder") for p in (ROOT / d).rglob("*.py")
                      if p.name != "config.py")
    for name in OTHER_VARIABLES:
        assert f'"{name}"' in sources, f"{name} is no longer read anywhere: remove it from OTHER_VARIABLES"


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_every_spaceport_name_in_the_repository_is_real() -> None:
    """Makefile, scripts/, k8s/, README.md, runtime-images/, bench/, tests/ and the code itself."""
    known = set(setting_variables()) | set(OTHER_VARIABLES) | NOT_VARIABLES
    wrong: dict[str, set[str]] = {}
    for path in tracked_files():
        if path in (Path(__file__), ROOT / "controller/config.py") or not path.is_file():  # they name wrong ones
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for name in set(re.findall(r"(?<!Unknown setting )SPACEPORT_[A-Z0-9_]+", text)):  # quoted errors are fine
            planned = name in PLANNED and path.suffix == ".md"
            if name not in known and not name.startswith(RESERVED_PREFIX) and not planned:
                wrong.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert not wrong, f"SPACEPORT_* names that are no setting: {wrong}"


def test_every_setting_is_documented_in_the_readme() -> None:
    """The error points at README.md's Configuration table: it lists every setting."""
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = {name for line in section.splitlines() if line.startswith("| `")
                  for name in re.findall(r"`([A-Z0-9_]+)`", line.split("|")[1])}
    missing = [v for v in setting_variables() if v.removeprefix(ENV_PREFIX) not in documented]
    assert not missing, f"settings missing from README.md's Configuration table: {missing}"


@pytest.mark.parametrize("argv", [["worker"], ["beat"], ["users", "create", "bob"], ["quota", "list"]])
def test_commands_that_build_settings_stop_at_start(argv: list[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACEPORT_REDIS_URL", "redis://nowhere:6379/0")
    result = CliRunner().invoke(app, [*argv, "--data-dir", str(tmp_path / "site")])
    assert result.exit_code == 2, result.output
    assert "Unknown setting SPACEPORT_REDIS_URL: did you mean SPACEPORT_BROKER_URL?" in result.output
    assert not (tmp_path / "site").exists(), "nothing is done before the settings are checked"


def test_settings_built_outside_settings_for_stop_the_cli_too(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`spaceport logs` builds Settings itself (for the public URL): main() reports the error the same way."""
    monkeypatch.setenv("SPACEPORT_PUBLICURL", "http://x")
    monkeypatch.setattr(sys, "argv", ["spaceport", "logs", "alice/app"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2
    assert "Unknown setting SPACEPORT_PUBLICURL: did you mean SPACEPORT_PUBLIC_URL?" in capsys.readouterr().err


def test_serve_with_a_bogus_variable_exits_2_naming_it(tmp_path: Path) -> None:
    """The real entry point, as a process: `python -m controller.cli serve` ends before it listens."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env["SPACEPORT_REDIS_URL"] = "redis://spaceport-redis:6379/0"
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "serve", "--port", "9", "--data-dir",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: Unknown setting SPACEPORT_REDIS_URL: did you mean SPACEPORT_BROKER_URL? "
                                   "(all settings: README.md, section Configuration)")
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("value", ["http://registry.local:5000/spaces", "registry.local:5000/Spaces", "a b", "reg/"
                                   "with/../dots", "host:port"])
def test_a_bad_registry_address_fails_at_start_saying_what_to_use(value: str) -> None:
    with pytest.raises(ValueError, match=r"is not a registry address: use HOST\[:PORT\]\[/PATH\]"):
        Settings(registry=value)


def test_a_registry_address_is_kept_without_its_trailing_slash() -> None:
    assert Settings(registry="registry.local:5000/spaces/").registry == "registry.local:5000/spaces"
    assert Settings(registry="  ").registry == ""
