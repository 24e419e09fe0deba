"""Base image resolution for sites without a registry (issue "Docker spaces on registry-less sites").

Every Dockerfile's FROM lines go through `resolve_from_lines` before a build. A base image is used
as is when the engine has it; otherwise an alias (python:3.11-slim -> spaceport/base-python:3.11)
or a registry mirror rewrites it; otherwise the build fails naming the image and the settings that
fix it. Stage references (`FROM builder` after `FROM x AS builder`) and `scratch` are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from builder.errors import BUILD_ERROR, BuildFailure

ALIASES_SETTING = "SPACEPORT_BASE_IMAGE_ALIASES"
MIRROR_SETTING = "SPACEPORT_REGISTRY_MIRROR"
DEBIAN_BASE = "spaceport/base-debian:bookworm"
SUPPORTED_PYTHONS = ("3.11",)

_DEBIAN_TAGS = ("bookworm", "bookworm-slim", "12", "12-slim", "stable", "stable-slim", "latest")
_PY_SUFFIXES = ("", "-slim", "-bookworm", "-slim-bookworm")
_HUB_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "registry-1.docker.io/library/",
                 "docker.io/", "index.docker.io/", "library/")
_PY_CANON = re.compile(r"^python:(3\.\d+)(?:\.\d+)?(?:-slim)?(?:-(?:bookworm|bullseye|buster|trixie))?$")
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_ARG = re.compile(r"^\s*ARG\s+(?P<rest>.+)$", re.IGNORECASE)
_FROM = re.compile(r"^(?P<indent>\s*)FROM\s+(?P<rest>.+)$", re.IGNORECASE)


def python_base(version: str) -> str:
    return f"spaceport/base-python:{version}"


def default_aliases(python_versions: Iterable[str] = SUPPORTED_PYTHONS) -> dict[str, str]:
    """python:3.X[-slim][-bookworm] -> spaceport/base-python:3.X; debian:bookworm[-slim] -> base-debian."""
    versions = list(python_versions)
    aliases: dict[str, str] = {}
    for version in versions:
        for suffix in _PY_SUFFIXES:
            aliases[f"python:{version}{suffix}"] = python_base(version)
    if versions:
        newest = max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
        for tag in ("3", "3-slim", "latest", "slim"):
            aliases[f"python:{tag}"] = python_base(newest)
    for tag in _DEBIAN_TAGS:
        aliases[f"debian:{tag}"] = DEBIAN_BASE
    return aliases


def parse_aliases(text: str) -> dict[str, str]:
    """'python:3.10=spaceport/base-python:3.11, node:20=my/node:20' -> dict (for the controller's setting)."""
    aliases: dict[str, str] = {}
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"{ALIASES_SETTING}: expected IMAGE=REPLACEMENT, got {item!r}")
        aliases[normalize_ref(source)] = target
    return aliases


def normalize_ref(ref: str) -> str:
    """Docker Hub spelling without registry/library prefixes: docker.io/library/python:3 -> python:3."""
    lowered = ref.strip()
    for prefix in _HUB_PREFIXES:
        if lowered.startswith(prefix):
            lowered = lowered[len(prefix):]
            break
    return lowered


def split_digest(ref: str) -> tuple[str, str]:
    name, _, digest = ref.partition("@")
    return name, digest


def _with_tag(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


@dataclass
class _Stages:
    names: set[str]
    global_args: dict[str, str]
    seen_from: bool = False


def resolve_from_lines(
    dockerfile_text: str,
    aliases: Mapping[str, str],
    mirror: str | None,
    available: Callable[[str], bool],
    build_args: Mapping[str, str] | None = None,
) -> tuple[str, list[str]]:
    """Rewrite FROM lines so every base image can be had here; returns (new text, messages).

    Raises BuildFailure(BUILD_ERROR) naming an image that is not available, aliased nor mirrored.
    """
    state = _Stages(names=set(), global_args={})
    out: list[str] = []
    messages: list[str] = []
    for number, line in _logical_lines(dockerfile_text):
        if not state.seen_from:
            _collect_args(line, state.global_args, build_args or {})
        match = _FROM.match(line)
        if match is None:
            out.append(line)
            continue
        state.seen_from = True
        out.append(_resolve_from(match, number, state, aliases, mirror, available, messages))
    text = "\n".join(out)
    return (text + "\n" if dockerfile_text.endswith("\n") else text), messages


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with backslash-continued FROM/ARG lines joined; others kept verbatim."""
    result: list[tuple[int, str]] = []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]
    i = 0
    while i < len(lines):
        start, line = i, lines[i]
        if re.match(r"^\s*(FROM|ARG)\s", line, re.IGNORECASE):
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
        result.append((start + 1, line))
        i += 1
    return result


def _collect_args(line: str, args: dict[str, str], build_args: Mapping[str, str]) -> None:
    match = _ARG.match(line)
    if match is None:
        return
    for token in match.group("rest").split():
        name, sep, default = token.partition("=")
        value = build_args.get(name, _unquote(default) if sep else None)
        if value is not None:
            args[name] = value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Dockerfile-style $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt} substitution."""

    def repl(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        value = variables.get(name, "")
        op, word = match.group("op"), match.group("word") or ""
        if op == "-":
            return value or word
        if op == "+":
            return word if value else ""
        return value

    return _VAR.sub(repl, text)


def _resolve_from(
    match: re.Match[str],
    number: int,
    state: _Stages,
    aliases: Mapping[str, str],
    mirror: str | None,
    available: Callable[[str], bool],
    messages: list[str],
) -> str:
    tokens = match.group("rest").split()
    flags = [t for t in tokens if t.startswith("--")]
    rest = [t for t in tokens if not t.startswith("--")]
    if not rest:
        raise BuildFailure(BUILD_ERROR, f"Dockerfile line {number}: FROM without an image")
    raw, tail = rest[0], rest[1:]
    stage_name = tail[1].lower() if len(tail) >= 2 and tail[0].lower() == "as" else None
    image = substitute(raw, state.global_args)
    new_image = _resolve_image(image, number, state, aliases, mirror, available, messages)
    if stage_name:
        state.names.add(stage_name)
    if new_image == image:
        return match.group(0)
    return match.group("indent") + " ".join(["FROM", *flags, new_image, *tail])


def _resolve_image(
    image: str,
    number: int,
    state: _Stages,
    aliases: Mapping[str, str],
    mirror: str | None,
    available: Callable[[str], bool],
    messages: list[str],
) -> str:
    if not image or "$" in image:
        raise BuildFailure(BUILD_ERROR, f"Dockerfile line {number}: FROM {image!r} uses an ARG with no value; give the ARG a default before the first FROM")
    if image.lower() in state.names or image == "scratch" or available(image):
        return image
    target = lookup_alias(image, aliases)
    if target is not None:
        note = " (digest dropped)" if split_digest(image)[1] else ""
        messages.append(f"base image {image} -> {target} (alias{note}, line {number})")
        return target
    if mirror:
        mirrored = mirror_ref(image, mirror)
        messages.append(f"base image {image} -> {mirrored} (registry mirror, line {number})")
        return mirrored
    raise BuildFailure(
        BUILD_ERROR,
        f"base image {image!r} (Dockerfile line {number}) is not available: this Spaceport cannot pull "
        f"from a registry and the Docker engine does not have it. Fix: change FROM to an available image "
        f"(e.g. {python_base(SUPPORTED_PYTHONS[0])}), or ask the admin to set {ALIASES_SETTING} "
        f"(e.g. '{normalize_ref(split_digest(image)[0])}=spaceport/base-python:3.11') or {MIRROR_SETTING}, "
        f"or load the image into the engine.",
    )


def lookup_alias(image: str, aliases: Mapping[str, str]) -> str | None:
    """The alias target for an image reference, trying exact, tagged and canonical python forms."""
    name = normalize_ref(split_digest(image)[0])
    for key in (image, name, _with_tag(name)):
        if key in aliases:
            return aliases[key]
    canon = _PY_CANON.match(name)
    if canon is not None:
        return aliases.get(f"python:{canon.group(1)}")
    return None


def mirror_ref(image: str, mirror: str) -> str:
    """python:3.11 -> MIRROR/library/python:3.11; ghcr.io/o/i:t -> MIRROR/o/i:t."""
    name, digest = split_digest(image)
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        path = name.split("/", 1)[1]
    else:
        path = normalize_ref(name)
        if "/" not in path:
            path = f"library/{path}"
    ref = f"{mirror.rstrip('/').removeprefix('https://').removeprefix('http://')}/{path}"
    return f"{ref}@{digest}" if digest else ref


def external_from_lines(dockerfile_text: str) -> list[int]:
    """Indexes (0-based physical lines) of FROM lines that start from an image, not an earlier stage."""
    stages: set[str] = set()
    indexes: list[int] = []
    for index, line in enumerate(dockerfile_text.split("\n")):
        match = _FROM.match(line)
        if match is None:
            continue
        rest = [t for t in match.group("rest").split() if not t.startswith("--")]
        if rest and rest[0].lower() not in stages and rest[0] != "scratch":
            indexes.append(index)
        if len(rest) >= 3 and rest[1].lower() == "as":
            stages.add(rest[2].lower())
    return indexes
