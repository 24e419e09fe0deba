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
    parse_aliases,
    resolve_from_lines,
)
from builder.errors import BUILD_ERROR, BuildFailure
from builder.image import CA_BUNDLE, DOCKERFILE, inject_ca, make_context

ALIASES = default_aliases(("3.11",))


def nothing(_ref: str) -> bool:
    return False


def test_python_slim_is_aliased() -> None:
    text, messages = resolve_from_lines("FROM python:3.11-slim\nRUN pip install x\n", ALIASES, None, nothing)
    assert text == "FROM spaceport/base-python:3.11\nRUN pip install x\n"
    assert messages == ["base image python:3.11-slim -> spaceport/base-python:3.11 (alias, line 1)"]


def test_locally_available_image_is_kept() -> None:
    original = "FROM python:3.11-slim\n"
    assert resolve_from_lines(original, ALIASES, None, lambda ref: ref == "python:3.11-slim") == (original, [])


def test_multi_stage_keeps_stage_references() -> None:
    dockerfile = (
        "FROM python:3.11 AS build\nRUN echo build\n"
        "FROM --platform=linux/amd64 debian:bookworm-slim as runtime\n"
        "COPY --from=build /x /x\nFROM build\nFROM Runtime\n"
    )
    text, messages = resolve_from_lines(dockerfile, ALIASES, None, nothing)
    assert text.splitlines() == [
        "FROM spaceport/base-python:3.11 AS build",
        "RUN echo build",
        "FROM --platform=linux/amd64 spaceport/base-debian:bookworm as runtime",
        "COPY --from=build /x /x",
        "FROM build",
        "FROM Runtime",
    ]
    assert len(messages) == 2


def test_arg_parameterised_from() -> None:
    dockerfile = 'ARG PY=3.11\nARG VARIANT="slim"\nFROM python:${PY}-$VARIANT\nARG PY\n'
    text, _ = resolve_from_lines(dockerfile, ALIASES, None, nothing)
    assert text.splitlines()[2] == "FROM spaceport/base-python:3.11"
    untouched, messages = resolve_from_lines(dockerfile, ALIASES, None, lambda ref: ref == "python:3.11-slim")
    assert untouched == dockerfile and messages == []


def test_build_arg_overrides_default_and_unresolvable_names_fix() -> None:
    dockerfile = "ARG PY=3.11\nFROM python:${PY}-slim\n"
    with pytest.raises(BuildFailure) as info:
        resolve_from_lines(dockerfile, ALIASES, None, nothing, build_args={"PY": "3.10"})
    assert info.value.stage == BUILD_ERROR
    for needle in ("python:3.10-slim", "line 2", "SPACEPORT_BASE_IMAGE_ALIASES", "SPACEPORT_REGISTRY_MIRROR"):
        assert needle in info.value.message


def test_arg_without_value_is_an_error() -> None:
    with pytest.raises(BuildFailure, match="ARG"):
        resolve_from_lines("ARG BASE\nFROM $BASE\n", ALIASES, None, nothing)


def test_mirror_used_when_no_alias() -> None:
    text, messages = resolve_from_lines("FROM node:20-slim\nFROM ghcr.io/org/img:1\n", ALIASES, "mirror.local:5000", nothing)
    assert text.splitlines() == ["FROM mirror.local:5000/library/node:20-slim", "FROM mirror.local:5000/org/img:1"]
    assert "registry mirror" in messages[0]


def test_digests() -> None:
    ref = "python:3.11-slim@sha256:" + "a" * 64
    text, messages = resolve_from_lines(f"FROM {ref}\n", ALIASES, None, nothing)
    assert text == "FROM spaceport/base-python:3.11\n" and "digest dropped" in messages[0]
    assert mirror_ref("node:20@sha256:" + "b" * 64, "m.io").endswith("/library/node:20@sha256:" + "b" * 64)


def test_scratch_and_hub_spellings() -> None:
    assert resolve_from_lines("FROM scratch\n", ALIASES, None, nothing) == ("FROM scratch\n", [])
    assert lookup_alias("docker.io/library/python:3.11", ALIASES) == "spaceport/base-python:3.11"
    assert lookup_alias("python:3.11.9-slim-bookworm", ALIASES) == "spaceport/base-python:3.11"
    assert lookup_alias("python:3.12-slim", ALIASES) is None
    assert lookup_alias("debian", ALIASES) == "spaceport/base-debian:bookworm"


def test_continued_from_line_is_joined() -> None:
    text, _ = resolve_from_lines("FROM \\\n  python:3.11 AS base\nRUN true\n", ALIASES, None, nothing)
    assert text == "FROM spaceport/base-python:3.11 AS base\nRUN true\n"


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
