"""Base image resolution for sites without a registry (issue "Docker spaces on registry-less sites").

Every Dockerfile's FROM lines go through `resolve_from_lines` before a build. A base image is used
as is when the engine has it; otherwise an alias (python:3.11-slim -> spaceport/base-python:3.11)
or a registry mirror rewrites it; otherwise the build fails naming the image and the settings that
fix it. Stage references (`FROM builder` after `FROM x AS builder`) and `scratch` are left alone.

Families the bootstrap can make from Debian packages (builder/bootstrap.py):
* python:3.X-slim[...] -> spaceport/base-python:3.X, and the full tags (python:3.X, python:3.X-bookworm,
  python:latest, ...) -> spaceport/base-sdk:3.X, because the official full images carry build-essential,
  git, headers, ... (a llama-cpp or C-extension build needs the compiler); a minor the site has no base for
  resolves to the nearest one it has, with a build-log warning (Debian bookworm packages only Python 3.11);
* node:<major>[-slim|-alpine|-bookworm|...] -> spaceport/base-node:18 (Debian's nodejs; other majors and
  alpine variants with a warning);
* debian:bookworm[-slim] -> spaceport/base-debian:bookworm;
* ghcr.io/astral-sh/uv:<latest|version> -> spaceport/base-uv:latest (/uv and /uvx from Spaceport's own uv; a
  pinned version gets the server's uv with a warning), for `COPY --from=ghcr.io/astral-sh/uv:... /uv /bin/`.
`COPY --from=IMAGE` (an image, not a stage name or index) is resolved like a FROM.
An unresolvable base fails naming the image and the exact setting that would provide it, with an example
of the same family (never a Python base for a Node image).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from builder.errors import BUILD_ERROR, BuildFailure

ALIASES_SETTING = "SPACEPORT_BASE_IMAGE_ALIASES"
MIRROR_SETTING = "SPACEPORT_REGISTRY_MIRROR"
BOOTSTRAP_COMMAND = "spaceport images bootstrap"
DEBIAN_BASE = "spaceport/base-debian:bookworm"
SUPPORTED_PYTHONS = ("3.11",)  # what Debian bookworm packages (the bootstrap makes these from Debian alone)
CANDIDATE_PYTHONS = tuple(f"3.{minor}" for minor in range(6, 15))  # minors a host interpreter may provide
DEBIAN_NODE_MAJOR = "18"  # what bookworm's nodejs package provides
UV_BASE = "spaceport/base-uv:latest"
UV_IMAGE = "ghcr.io/astral-sh/uv"
_UV_VERSION_TAG = re.compile(r"^ghcr\.io/astral-sh/uv:(?P<version>\d+(?:\.\d+){0,2})$")
_NODE_TAG = re.compile(r"^node(?::(?P<major>\d+|lts|current|latest)?(?:\.[\d.]+)?(?:-(?P<variant>[a-z][a-z0-9.-]*))?)?$")

_DEBIAN_TAGS = ("bookworm", "bookworm-slim", "12", "12-slim", "stable", "stable-slim", "latest")
_PY_SLIM_SUFFIXES = ("-slim", "-slim-bookworm")
_PY_FULL_SUFFIXES = ("", "-bookworm")
_HUB_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "registry-1.docker.io/library/",
                 "docker.io/", "index.docker.io/", "library/")
_PY_CANON = re.compile(r"^python:(3\.\d+)(?:\.\d+)?(?P<slim>-slim)?(?:-(?:bookworm|bullseye|buster|trixie))?$")
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_ARG = re.compile(r"^\s*ARG\s+(?P<rest>.+)$", re.IGNORECASE)
_FROM = re.compile(r"^(?P<indent>\s*)FROM\s+(?P<rest>.+)$", re.IGNORECASE)
_COPY_FROM = re.compile(r"^(?P<head>\s*COPY\s+(?:--\S+\s+)*?--from=)(?P<ref>\S+)(?P<tail>.*)$", re.IGNORECASE)


def python_base(version: str) -> str:
    return f"spaceport/base-python:{version}"


def sdk_base(version: str) -> str:
    """The base generated gradio/streamlit builds start FROM (runtime-images/sdk)."""
    return f"spaceport/base-sdk:{version}"


def node_base(major: str = DEBIAN_NODE_MAJOR) -> str:
    return f"spaceport/base-node:{major}"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def nearest_python(requested: str, available: Iterable[str]) -> str | None:
    """The available 3.X closest to the requested minor (ties: the newer); None when none is available."""
    versions = list(available)
    if not versions:
        return None
    want = _version_key(requested)[:2]
    if len(want) < 2:
        return max(versions, key=_version_key)
    return min(versions, key=lambda v: (abs(_version_key(v)[1] - want[1]) if _version_key(v)[:1] == want[:1] else 99,
                                        -_version_key(v)[1]))


def site_pythons(available: Callable[[str], bool], base: Callable[[str], str] = python_base) -> tuple[str, ...]:
    """The Python minors this site has `base` images for: Debian's own (always: a missing one gets the bootstrap
    hint) and every other one the engine has (`spaceport images bootstrap --python X.Y` from a host interpreter)."""
    extra = [version for version in CANDIDATE_PYTHONS if version not in SUPPORTED_PYTHONS and available(base(version))]
    return tuple(sorted({*SUPPORTED_PYTHONS, *extra}, key=_version_key))


def default_aliases(python_versions: Iterable[str] = SUPPORTED_PYTHONS) -> dict[str, str]:
    """python:3.X-slim[-bookworm] -> base-python:3.X; python:3.X[-bookworm] -> base-sdk:3.X; debian -> base-debian."""
    versions = list(python_versions)
    aliases: dict[str, str] = {}
    for version in versions:
        for suffix in _PY_SLIM_SUFFIXES:
            aliases[f"python:{version}{suffix}"] = python_base(version)
        for suffix in _PY_FULL_SUFFIXES:
            aliases[f"python:{version}{suffix}"] = sdk_base(version)
    if versions:
        newest = max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
        for tag in ("3-slim", "slim"):
            aliases[f"python:{tag}"] = python_base(newest)
        for tag in ("3", "latest", "bookworm", "3-bookworm"):
            aliases[f"python:{tag}"] = sdk_base(newest)
    for tag in _DEBIAN_TAGS:
        aliases[f"debian:{tag}"] = DEBIAN_BASE
    aliases[f"{UV_IMAGE}:latest"] = UV_BASE
    aliases["node"] = node_base()  # the family default; exact tags below need no warning
    for suffix in ("", "-slim", "-bookworm", "-bookworm-slim"):
        aliases[f"node:{DEBIAN_NODE_MAJOR}{suffix}"] = node_base()
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
            out.append(_resolve_copy_from(line, number, state, aliases, mirror, available, messages))
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


def _resolve_copy_from(
    line: str,
    number: int,
    state: _Stages,
    aliases: Mapping[str, str],
    mirror: str | None,
    available: Callable[[str], bool],
    messages: list[str],
) -> str:
    """`COPY --from=IMAGE ...` with IMAGE resolved like a base image (stage names, indexes and $ARGs as they are)."""
    match = _COPY_FROM.match(line)
    if match is None:
        return line
    ref = match.group("ref").strip("\"'")
    if not ref or "$" in ref or ref.isdigit() or ref.lower() in state.names:
        return line
    new_ref = _resolve_image(ref, number, state, aliases, mirror, available, messages)
    return line if new_ref == ref else f"{match.group('head')}{new_ref}{match.group('tail')}"


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
        return _bootstrapped(image, target, number, available)
    if mirror:
        mirrored = mirror_ref(image, mirror)
        messages.append(f"base image {image} -> {mirrored} (registry mirror, line {number})")
        return mirrored
    fallback = fallback_alias(image, aliases)
    if fallback is not None:
        target, warning = fallback
        messages.append(f"warning: {warning}; base image {image} -> {target} (line {number})")
        return _bootstrapped(image, target, number, available)
    raise BuildFailure(BUILD_ERROR, unavailable_message(image, number))


def _bootstrapped(image: str, target: str, number: int, available: Callable[[str], bool]) -> str:
    """An alias to a bootstrap image (spaceport/...) that the engine lacks fails saying how to make it."""
    if target.startswith("spaceport/base-") and not available(target):
        raise BuildFailure(
            BUILD_ERROR,
            f"base image {image!r} (Dockerfile line {number}) resolves to {target}, which this Docker engine "
            f"does not have yet. Fix: ask the admin to run `{BOOTSTRAP_COMMAND}` (it builds it from Debian "
            f"packages), or to set {MIRROR_SETTING}.",
        )
    return target


def family_example(image: str) -> str:
    """A replacement of the same family for an error message."""
    name = normalize_ref(split_digest(image)[0])
    if name.startswith("node"):
        return node_base()
    if name.startswith("python"):
        return python_base(SUPPORTED_PYTHONS[0])
    if name.startswith(("debian", "ubuntu")):
        return DEBIAN_BASE
    if name.startswith(UV_IMAGE):
        return UV_BASE
    return "an image your engine has"


def unavailable_message(image: str, number: int) -> str:
    name = normalize_ref(split_digest(image)[0])
    example = family_example(image)
    target = example if example.startswith("spaceport/") else "REGISTRY/IMAGE:TAG"
    return (
        f"base image {image!r} (Dockerfile line {number}) is not available: this Spaceport cannot pull from a "
        f"registry and the Docker engine does not have it. Fix: change FROM to an available image"
        f"{f' (e.g. {example})' if example.startswith('spaceport/') else ''}, or ask the admin to set "
        f"{ALIASES_SETTING}='{name}={target}' or {MIRROR_SETTING}=<registry mirror host>, or to load "
        f"{name} into the Docker engine."
    )


def fallback_alias(image: str, aliases: Mapping[str, str]) -> tuple[str, str] | None:
    """(target, warning) for a python minor or node major the site has no base for, else None."""
    name = normalize_ref(split_digest(image)[0])
    canon = _PY_CANON.match(name)
    if canon is not None:
        have = _python_minors(aliases, slim=canon.group("slim") is not None)
        nearest = nearest_python(canon.group(1), have)
        if nearest is None:
            return None
        return have[nearest], (f"Python {canon.group(1)} is not available on this server (it has base images for "
                               f"Python {', '.join(sorted(have, key=_version_key))}; `{BOOTSTRAP_COMMAND} --python "
                               f"{canon.group(1)}` makes one from a host interpreter); using the nearest, Python {nearest}")
    uv = _UV_VERSION_TAG.match(name)
    if uv is not None and f"{UV_IMAGE}:latest" in aliases:
        return aliases[f"{UV_IMAGE}:latest"], (f"uv {uv.group('version')} is not available on this server (no "
                                               "registry); using the uv Spaceport runs")
    return _node_fallback(name, aliases)


def _node_fallback(name: str, aliases: Mapping[str, str]) -> tuple[str, str] | None:
    node = _NODE_TAG.match(name)
    target = aliases.get("node")
    if node is None or target is None:
        return None
    major, variant = node.group("major") or "latest", node.group("variant") or ""
    notes = []
    if major != DEBIAN_NODE_MAJOR:
        notes.append(f"Node {major} is not available on this server (Debian bookworm packages Node "
                     f"{DEBIAN_NODE_MAJOR}); using Node {DEBIAN_NODE_MAJOR}")
    if variant.startswith("alpine"):
        notes.append("the alpine variant is replaced by a Debian one (use apt-get, not apk)")
    return target, "; ".join(notes) or f"node base from Debian's nodejs {DEBIAN_NODE_MAJOR}"


def _python_minors(aliases: Mapping[str, str], slim: bool) -> dict[str, str]:
    """{'3.11': target} of the python:3.X[-slim] aliases; a slim tag falls back to the full minor's alias
    (an admin's 'python:3.10=...' covers python:3.10-slim too)."""
    full = {key.split(":", 1)[1]: target for key, target in aliases.items() if re.fullmatch(r"python:3\.\d+", key)}
    if not slim:
        return full
    slims = {key.split(":", 1)[1].removesuffix("-slim"): target for key, target in aliases.items()
             if re.fullmatch(r"python:3\.\d+-slim", key)}
    return {**full, **slims}


def lookup_alias(image: str, aliases: Mapping[str, str]) -> str | None:
    """The alias target for an image reference, trying exact, tagged and canonical python forms."""
    name = normalize_ref(split_digest(image)[0])
    for key in (image, name, _with_tag(name)):
        if key in aliases:
            return aliases[key]
    canon = _PY_CANON.match(name)
    if canon is not None:
        return _python_minors(aliases, slim=canon.group("slim") is not None).get(canon.group(1))
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
