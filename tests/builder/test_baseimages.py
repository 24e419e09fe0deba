from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import IO

import pytest

from builder.baseimages import (
    default_aliases,
    lookup_alias,
    mirror_ref,
    nearest_python,
    parse_aliases,
    resolve_from_lines,
    site_pythons,
)
from builder.buildpacks.base import RepoFiles
from builder.errors import BUILD_ERROR, BuildFailure
from builder.image import CA_BUNDLE, DOCKERFILE, failure_summary, inject_ca, make_context, prepare_dockerfile
from builder.spaceconfig import load_space_config

ALIASES = default_aliases(("3.11",))


def nothing(_ref: str) -> bool:
    return False


def bootstrapped(ref: str) -> bool:
    """An engine that has the bootstrap images (spaceport/base-*) and nothing else."""
    return ref.startswith("spaceport/")


def test_python_slim_is_aliased() -> None:
    text, messages = resolve_from_lines("FROM python:3.11-slim\nRUN pip install x\n", ALIASES, None, bootstrapped)
    assert text == "FROM spaceport/base-python:3.11\nRUN pip install x\n"
    assert messages == ["base image python:3.11-slim -> spaceport/base-python:3.11 (alias, line 1)"]


@pytest.mark.parametrize(
    ("image", "base"),
    [
        ("python:latest", "spaceport/base-sdk:3.11"),
        ("python:3", "spaceport/base-sdk:3.11"),
        ("python:3.11", "spaceport/base-sdk:3.11"),
        ("python:3.11-bookworm", "spaceport/base-sdk:3.11"),
        ("python:3.11.8-bullseye", "spaceport/base-sdk:3.11"),
        ("docker.io/library/python:3.10", "spaceport/base-sdk:3.11"),  # nearest minor, with a warning
        ("python:3.10.13", "spaceport/base-sdk:3.11"),
        ("python:3.11-slim", "spaceport/base-python:3.11"),
        ("python:3.11.9-slim-bookworm", "spaceport/base-python:3.11"),
        ("python:3.9-slim-bullseye", "spaceport/base-python:3.11"),
        ("python:slim", "spaceport/base-python:3.11"),
        ("python:3-slim", "spaceport/base-python:3.11"),
    ],
)
def test_full_python_tags_get_the_sdk_base_and_slim_tags_the_slim_one(image: str, base: str) -> None:
    """The official full images have build-essential, git and headers (a llama-cpp build needs a C++
    compiler); -slim ones do not."""
    text, messages = resolve_from_lines(f"FROM {image}\n", ALIASES, None, bootstrapped)
    assert text == f"FROM {base}\n"
    assert f"{image} -> {base}" in messages[0]


def test_an_admins_minor_alias_covers_its_slim_tag_and_a_slim_alias_wins() -> None:
    aliases = {**ALIASES, "python:3.10": "my/python:3.10"}
    assert lookup_alias("python:3.10-slim", aliases) == "my/python:3.10"
    assert lookup_alias("python:3.10.2", aliases) == "my/python:3.10"
    aliases["python:3.10-slim"] = "my/python:3.10-slim"
    assert lookup_alias("python:3.10-slim-bookworm", aliases) == "my/python:3.10-slim"
    assert lookup_alias("python:3.10-bookworm", aliases) == "my/python:3.10"


def test_locally_available_image_is_kept() -> None:
    original = "FROM python:3.11-slim\n"
    assert resolve_from_lines(original, ALIASES, None, lambda ref: ref == "python:3.11-slim") == (original, [])


def test_multi_stage_keeps_stage_references() -> None:
    dockerfile = (
        "FROM python:3.11 AS build\nRUN echo build\n"
        "FROM --platform=linux/amd64 debian:bookworm-slim as runtime\n"
        "COPY --from=build /x /x\nFROM build\nFROM Runtime\n"
    )
    text, messages = resolve_from_lines(dockerfile, ALIASES, None, bootstrapped)
    assert text.splitlines() == [
        "FROM spaceport/base-sdk:3.11 AS build",
        "RUN echo build",
        "FROM --platform=linux/amd64 spaceport/base-debian:bookworm as runtime",
        "COPY --from=build /x /x",
        "FROM build",
        "FROM Runtime",
    ]
    assert len(messages) == 2


def test_arg_parameterised_from() -> None:
    dockerfile = 'ARG PY=3.11\nARG VARIANT="slim"\nFROM python:${PY}-$VARIANT\nARG PY\n'
    text, _ = resolve_from_lines(dockerfile, ALIASES, None, bootstrapped)
    assert text.splitlines()[2] == "FROM spaceport/base-python:3.11"
    untouched, messages = resolve_from_lines(dockerfile, ALIASES, None, lambda ref: ref == "python:3.11-slim")
    assert untouched == dockerfile and messages == []


def test_build_arg_overrides_default_and_unresolvable_names_fix() -> None:
    dockerfile = "ARG IMG=python:3.11\nFROM ${IMG}-slim\n"
    with pytest.raises(BuildFailure) as info:
        resolve_from_lines(dockerfile, ALIASES, None, bootstrapped, build_args={"IMG": "ghcr.io/org/tool:2"})
    assert info.value.stage == BUILD_ERROR
    for needle in ("ghcr.io/org/tool:2-slim", "line 2", "SPACEPORT_BASE_IMAGE_ALIASES='ghcr.io/org/tool:2-slim=",
                   "SPACEPORT_REGISTRY_MIRROR"):
        assert needle in info.value.message
    assert "base-python" not in info.value.message


def test_python_minor_the_site_lacks_resolves_to_the_nearest_with_a_warning() -> None:
    text, messages = resolve_from_lines("FROM python:3.10\nFROM python:3.12-slim-bookworm\n", ALIASES, None, bootstrapped)
    assert text == "FROM spaceport/base-sdk:3.11\nFROM spaceport/base-python:3.11\n"
    assert messages[0].startswith("warning: Python 3.10 is not available on this server")
    assert "using the nearest, Python 3.11" in messages[0] and "python:3.10 -> spaceport/base-sdk:3.11" in messages[0]
    assert nearest_python("3.10", ("3.9", "3.11")) == "3.11" and nearest_python("3.8", ("3.9", "3.12")) == "3.9"
    assert nearest_python("3.10", ()) is None


@pytest.mark.parametrize(
    ("image", "warning"),
    [
        ("node:18", None),
        ("node:18-slim", None),
        ("node:20-slim", "Node 20 is not available on this server"),
        ("node:18-alpine", "alpine variant is replaced by a Debian one"),
        ("node:lts-alpine3.19", "Node lts is not available"),
        ("docker.io/library/node:22.3.0-bookworm", "Node 22 is not available"),
    ],
)
def test_node_bases_resolve_to_debians_nodejs(image: str, warning: str | None) -> None:
    text, messages = resolve_from_lines(f"FROM {image} AS web\nRUN npm ci\n", ALIASES, None, bootstrapped)
    assert text == "FROM spaceport/base-node:18 AS web\nRUN npm ci\n"
    if warning is None:
        assert messages == [f"base image {image} -> spaceport/base-node:18 (alias, line 1)"]
    else:
        assert messages[0].startswith("warning: ") and warning in messages[0]


def test_node_base_not_bootstrapped_names_the_command_never_a_python_base() -> None:
    with pytest.raises(BuildFailure) as info:
        resolve_from_lines("FROM node:18-alpine\n", ALIASES, None, nothing)
    message = info.value.message
    assert "node:18-alpine" in message and "spaceport/base-node:18" in message and "spaceport images bootstrap" in message
    assert "python" not in message
    with pytest.raises(BuildFailure) as info:
        resolve_from_lines("FROM node:18-alpine\n", {}, None, nothing)
    message = info.value.message
    assert "SPACEPORT_BASE_IMAGE_ALIASES='node:18-alpine=spaceport/base-node:18'" in message
    assert "SPACEPORT_REGISTRY_MIRROR" in message and "python" not in message


def test_failure_summary_names_the_instruction_and_its_last_error_line() -> None:
    tail = [
        "Step 7/12 : RUN uv pip install -r requirements.txt",
        " ---> Running in 567c0ffee123",
        "Resolved 3 packages",
        "  x No solution found when resolving dependencies:",
        "  ╰─▶ Because torch==1.10.2 has no wheels with a matching Python ABI tag, we can conclude that it cannot be used.",
        "Removing intermediate container 567c0ffee123",
    ]
    error = "The command '/bin/sh -c uv pip install -r requirements.txt' returned a non-zero code: 1"
    summary = failure_summary(tail[0], tail, error)
    assert summary == ("Dockerfile step 7/12 `RUN uv pip install -r requirements.txt` failed (exit code 1): "
                       "╰─▶ Because torch==1.10.2 has no wheels with a matching Python ABI tag, we can conclude that it cannot be used.")
    assert "Removing intermediate container" not in summary
    assert failure_summary("", [], "pull access denied") == "docker build failed: pull access denied"
    colored = ["Step 2/3 : RUN apk fix", "\x1b[91mspaceport apk shim: 'apk fix' is not supported; use apt-get", "\x1b[0m"]
    assert failure_summary(colored[0], colored, "returned a non-zero code: 1").endswith(
        "(exit code 1): spaceport apk shim: 'apk fix' is not supported; use apt-get")


def test_arg_without_value_is_an_error() -> None:
    with pytest.raises(BuildFailure, match="ARG"):
        resolve_from_lines("ARG BASE\nFROM $BASE\n", ALIASES, None, bootstrapped)


def test_mirror_used_when_no_alias() -> None:
    text, messages = resolve_from_lines("FROM node:20-slim\nFROM ghcr.io/org/img:1\n", ALIASES, "mirror.local:5000", bootstrapped)
    assert text.splitlines() == ["FROM mirror.local:5000/library/node:20-slim", "FROM mirror.local:5000/org/img:1"]
    assert "registry mirror" in messages[0]


def test_digests() -> None:
    ref = "python:3.11-slim@sha256:" + "a" * 64
    text, messages = resolve_from_lines(f"FROM {ref}\n", ALIASES, None, bootstrapped)
    assert text == "FROM spaceport/base-python:3.11\n" and "digest dropped" in messages[0]
    assert mirror_ref("node:20@sha256:" + "b" * 64, "m.io").endswith("/library/node:20@sha256:" + "b" * 64)


def test_scratch_and_hub_spellings() -> None:
    assert resolve_from_lines("FROM scratch\n", ALIASES, None, bootstrapped) == ("FROM scratch\n", [])
    assert lookup_alias("docker.io/library/python:3.11", ALIASES) == "spaceport/base-sdk:3.11"
    assert lookup_alias("python:3.11.9-slim-bookworm", ALIASES) == "spaceport/base-python:3.11"
    assert lookup_alias("python:3.12-slim", ALIASES) is None  # no exact alias: the nearest-minor fallback decides
    assert lookup_alias("debian", ALIASES) == "spaceport/base-debian:bookworm"


def test_continued_from_line_is_joined() -> None:
    text, _ = resolve_from_lines("FROM \\\n  python:3.11 AS base\nRUN true\n", ALIASES, None, bootstrapped)
    assert text == "FROM spaceport/base-sdk:3.11 AS base\nRUN true\n"


def test_parse_aliases() -> None:
    assert parse_aliases("python:3.10=spaceport/base-python:3.11, docker.io/library/node:20=my/node:20") == {
        "python:3.10": "spaceport/base-python:3.11",
        "node:20": "my/node:20",
    }
    with pytest.raises(ValueError, match="SPACEPORT_BASE_IMAGE_ALIASES"):
        parse_aliases("python:3.10")


def test_inject_ca_after_external_from_only() -> None:
    text = inject_ca("FROM a AS one\nRUN x\nFROM one\nFROM b\n")
    lines = text.splitlines()
    assert lines[0] == "FROM a AS one" and lines[1].startswith(f"COPY {CA_BUNDLE} ")
    assert lines[2].startswith("ENV SSL_CERT_FILE=")
    assert lines[4] == "FROM one" and lines[5] == "FROM b" and lines[6].startswith("COPY ")
    assert len(lines) == 8


def tar_names(buffer: IO[bytes]) -> list[str]:
    with tarfile.open(fileobj=buffer) as tar:
        return tar.getnames()


def test_context_is_deterministic_and_skips_git(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("secret-ish")
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.py").write_text("a")
    first = make_context(tmp_path, "FROM x\n", b"CA", use_dockerignore=False).read()
    os.utime(tmp_path / "b.txt", (1, 1))
    second = make_context(tmp_path, "FROM x\n", b"CA", use_dockerignore=False)
    assert first == second.read()
    second.seek(0)
    assert tar_names(second) == ["b.txt", "sub/a.py", DOCKERFILE, CA_BUNDLE]


def test_context_honours_dockerignore_for_docker_spaces(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.log\n")
    (tmp_path / "app.py").write_text("")
    (tmp_path / "debug.log").write_text("")
    names = tar_names(make_context(tmp_path, "FROM x\n", None, use_dockerignore=True))
    assert "debug.log" not in names and "app.py" in names and DOCKERFILE in names


def test_pythons_made_from_host_interpreters_are_used_and_are_the_nearest_for_the_rest(tmp_path: Path) -> None:
    """An engine with base images for 3.10 (`spaceport images bootstrap --python 3.10`) and Debian's 3.11."""
    engine = {f"spaceport/base-{kind}:{v}" for kind in ("python", "sdk") for v in ("3.10", "3.11")}
    have = engine.__contains__
    assert site_pythons(have) == ("3.10", "3.11") and site_pythons(nothing) == ("3.11",)
    text, messages = resolve_from_lines("FROM python:3.10-slim\nFROM python:3.9\n", default_aliases(site_pythons(have)),
                                        None, have)
    assert text == "FROM spaceport/base-python:3.10\nFROM spaceport/base-sdk:3.10\n"
    assert "using the nearest, Python 3.10" in messages[-1] and "--python 3.9" in messages[-1]
    (tmp_path / "app.py").write_text("import gradio\n")
    for wanted, used in (("3.10", "3.10"), ("3.8", "3.10"), ("3.12", "3.11")):
        (tmp_path / "README.md").write_text(f"---\nsdk: gradio\nsdk_version: 4.44.1\napp_file: app.py\n"
                                            f"python_version: '{wanted}'\n---\n")
        log: list[str] = []
        config = load_space_config(tmp_path)
        dockerfile = prepare_dockerfile(tmp_path, config, RepoFiles.scan(tmp_path), {}, None, None, None, log.append,
                                        available=have)
        assert dockerfile.startswith(f"FROM spaceport/base-sdk:{used}\n"), (wanted, dockerfile[:80])
        assert any("it has Python 3.10, 3.11" in line for line in log) == (wanted != used), log


def test_requirements_marked_for_another_python_pick_its_base_as_local_builds_do(tmp_path: Path) -> None:
    """AaronBarbosa12/twitter_sentiment_ml marks every line `python_version < "3.10"`; the site has a 3.8 base."""
    engine = {f"spaceport/base-{kind}:{v}" for kind in ("python", "sdk") for v in ("3.8", "3.11")}
    (tmp_path / "app.py").write_text("import folium\n")
    (tmp_path / "README.md").write_text("---\nsdk: gradio\nsdk_version: 3.0.6\napp_file: app.py\n---\n")
    (tmp_path / "requirements.txt").write_text('folium==0.14.0 ; python_version >= "3.8" and python_version < "3.10"\n')
    log: list[str] = []
    dockerfile = prepare_dockerfile(tmp_path, load_space_config(tmp_path), RepoFiles.scan(tmp_path), {}, None, None,
                                    None, log.append, available=engine.__contains__)
    assert dockerfile.startswith("FROM spaceport/base-sdk:3.8\n")
    assert "marked for other Pythons than 3.10" in log[0] and "building with Python 3.9" in log[0]  # newest they admit
    assert "building with the nearest, Python 3.8" in log[1]  # the site has no 3.9 base
