"""builder.sdkdeps: the hosted platform's dependency set per SDK, its install order, and release dates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from builder import sdkdeps
from builder.errors import BuildFailure
from builder.sdkdeps import InstallStep, install_plan, sdk_constraints, sdk_release_date
from builder.spaceconfig import SpaceConfig

RELEASE = datetime(2023, 12, 5, 0, 19, 30, tzinfo=UTC)


def pypi_answer(version: str, stamp: str) -> bytes:
    return json.dumps({"info": {"name": "gradio"}, "releases": {
        version: [{"filename": "g.whl", "upload_time_iso_8601": stamp},
                  {"filename": "g.tar.gz", "upload_time_iso_8601": "2023-12-05T00:20:00.000000Z"}],
        "0.1": [{"filename": "old.tar.gz", "upload_time": "2019-01-01T00:00:00"}],
    }}).encode()


def test_plan_order_is_base_then_requirements_then_sdk_pin() -> None:
    config = SpaceConfig(sdk="gradio", sdk_version="4.8.0", python_version="3.11")
    plan = install_plan(config, {"app.py", "requirements.txt", "pre-requirements.txt"}, RELEASE)
    assert [s.what for s in plan.steps] == ["base packages", "pre-requirements.txt", "requirements.txt", "gradio sdk pin"]
    assert plan.steps[0].requirements == ("datasets", "huggingface_hub", "hf-transfer", "requests")
    assert plan.steps[-1].requirements == ("gradio[oauth]==4.8.0", "uvicorn>=0.14.0", "spaces", "fastapi<0.113.0")
    assert {s.exclude_newer for s in plan.steps} == {"2023-12-06T00:19:30Z"}
    assert all(s.constraints == ("huggingface_hub<1", "fastapi<0.113", "numpy<2", "pydantic<2.11") for s in plan.steps)
    assert plan.steps[0].undated == ("hf-transfer",) and all(s.undated == () for s in plan.steps[1:])
    assert any("installed last, so it wins over requirements.txt" in note for note in plan.notes)


def test_requirement_files_only_when_present() -> None:
    plan = install_plan(SpaceConfig(sdk="streamlit", sdk_version="1.39.0"), {"app.py"}, None)
    assert [s.what for s in plan.steps] == ["base packages", "streamlit sdk pin"]
    assert plan.steps[-1].requirements == ("streamlit==1.39.0",)
    assert plan.exclude_newer is None
    assert any("release date of streamlit 1.39.0 unknown" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("sdk", "version", "expected"),
    [
        ("gradio", "3.0.17", ("huggingface_hub<1", "fastapi<0.113", "numpy<2", "setuptools<81")),
        ("gradio", "3.50.2", ("huggingface_hub<1", "fastapi<0.113", "numpy<2", "setuptools<81")),
        ("gradio", "4.44.1", ("huggingface_hub<1", "fastapi<0.113", "numpy<2", "pydantic<2.11")),
        ("gradio", "5.32.0", ()),
        ("gradio", None, ()),
        ("streamlit", "1.10.0", ("setuptools<81", "altair<5", "numpy<2")),
        ("streamlit", "1.2.0", ("setuptools<81", "altair<5", "click<8.1", "protobuf<4", "numpy<2")),
        ("streamlit", "1.34.0", ("numpy<2",)),
        ("streamlit", "1.39.0", ()),
        ("docker", None, ()),
    ],
)
def test_constraints_per_sdk_line(sdk: str, version: str | None, expected: tuple[str, ...]) -> None:
    assert sdk_constraints(sdk, version) == expected


def test_docker_and_static_have_no_plan() -> None:
    for sdk in ("docker", "static"):
        assert install_plan(SpaceConfig(sdk=sdk), {"requirements.txt"}, RELEASE).steps == ()


def test_unpinned_sdk_resolves_today_without_constraints() -> None:
    plan = install_plan(SpaceConfig(sdk="gradio"), {"requirements.txt"}, RELEASE)
    assert plan.exclude_newer is None and plan.constraints == ()
    assert plan.steps[-1].requirements == ("gradio[oauth]", "uvicorn>=0.14.0", "spaces")


def test_date_is_never_before_the_pythons_wheels() -> None:
    old = datetime(2022, 5, 1, tzinfo=UTC)
    assert sdkdeps.effective_date(old, "3.11") == "2022-11-15T00:00:00Z"
    assert sdkdeps.effective_date(old, "3.10") == "2022-05-02T00:00:00Z"
    assert sdkdeps.effective_date(None, "3.11") is None


def test_uv_args() -> None:
    step = InstallStep("requirements.txt", files=("requirements.txt",), constraints=("x<1",), exclude_newer="2024-01-01T00:00:00Z")
    assert step.uv_args("/c.txt") == ["-r", "requirements.txt", "--constraint", "/c.txt", "--exclude-newer", "2024-01-01T00:00:00Z"]
    assert InstallStep("sdk", requirements=("gradio==4.0",)).uv_args("/c.txt") == ["gradio==4.0"]
    base = InstallStep("base", requirements=("hf-transfer",), exclude_newer="2022-11-15T00:00:00Z", undated=("hf-transfer",))
    assert base.uv_args(None) == ["hf-transfer", "--exclude-newer", "2022-11-15T00:00:00Z",
                                  "--exclude-newer-package", "hf-transfer=2999-01-01T00:00:00Z"]


@pytest.mark.parametrize("version", ["4.0; rm -rf /", "$(id)", "4 .0", "", "latest"])
def test_sdk_version_must_be_a_version(version: str) -> None:
    with pytest.raises(BuildFailure) as failure:
        install_plan(SpaceConfig(sdk="gradio", sdk_version=version or " "), set(), None)
    assert failure.value.stage == "CONFIG_ERROR"


def test_release_date_from_index_is_cached(tmp_path: Path) -> None:
    calls: list[str] = []

    def fetch(url: str, timeout: float) -> bytes:
        calls.append(url)
        return pypi_answer("4.8.0", "2023-12-05T00:19:30.058462Z")

    cache = tmp_path / "dates.json"
    first = sdk_release_date("gradio", "4.8.0", index="https://index.example/", cache_file=cache, fetch=fetch)
    assert first == datetime(2023, 12, 5, 0, 19, 30, 58462, tzinfo=UTC)
    assert calls == ["https://index.example/pypi/gradio/json"]

    def offline(url: str, timeout: float) -> bytes:
        raise OSError("network unreachable")

    again = sdk_release_date("gradio", "4.8.0", index="https://index.example", cache_file=cache, fetch=offline)
    assert again == first  # from the disk cache, no second request
    assert sdk_release_date("gradio", "9.9.9", index="https://index.example", cache_file=cache, fetch=offline) is None
    assert sdk_release_date("gradio", "9.9.9", index="https://index.example", cache_file=cache, fetch=fetch) is None


def test_release_date_uses_the_configured_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setenv(sdkdeps.INDEX_SETTING, "https://mirror.example/pypi-root")
    sdk_release_date("streamlit", "1.0", cache_file=tmp_path / "c.json",
                     fetch=lambda url, timeout: seen.append(url) or b"not json")  # type: ignore[func-returns-value]
    assert seen == ["https://mirror.example/pypi-root/pypi/streamlit/json"]


def test_release_date_from_the_real_index(tmp_path: Path) -> None:
    """PyPI is reachable from this machine and CI: the real JSON API answers with gradio 4.8.0's upload."""
    found = sdk_release_date("gradio", "4.8.0", cache_file=tmp_path / "c.json")
    assert found is not None and found.date().isoformat() == "2023-12-05"


@pytest.mark.parametrize(
    ("sdk", "text", "expected"),
    [
        ("streamlit", "streamlit==0.80.0", "0.80.0"),  # nateraw/spaces-template-example (corpus)
        ("gradio", "numpy\ngradio[oauth] == 4.7.1  # the demo\n", "4.7.1"),
        ("gradio", "gradio>=3.0\n", None),  # not exact: the sdk line stays unknown
        ("gradio", "gradio_client==0.7.0\n", None),
        ("streamlit", "gradio==4.0.0\n", None),
        ("gradio", "gradio==$(cat /etc/passwd)\n", None),
    ],
)
def test_requirements_pin_is_only_an_exact_sdk_pin(sdk: str, text: str, expected: str | None) -> None:
    assert sdkdeps.requirements_pin(sdk, text) == expected


def test_without_sdk_version_the_pinned_sdk_decides_the_plan(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("streamlit==0.80.0\n")
    log: list[str] = []
    config = sdkdeps.with_requirements_pin(SpaceConfig(sdk="streamlit"), tmp_path, log.append)
    assert config.sdk_version == "0.80.0"
    assert "protobuf<4" in install_plan(config, {"requirements.txt"}, None).constraints
    assert any("requirements.txt pins streamlit==0.80.0" in line for line in log)
    pinned = SpaceConfig(sdk="streamlit", sdk_version="1.30.0")
    assert sdkdeps.with_requirements_pin(pinned, tmp_path, log.append) is pinned  # README's sdk_version wins
