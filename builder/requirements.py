"""Requirement files are untrusted: refuse every line that points outside the repository.

`check_requirement_files(source)` reads requirements.txt and pre-requirements.txt (and the files they
include with -r/-c) *as text, without running anything*, and raises a CONFIG_ERROR naming the file, the
line and what to fix for:

* includes (-r/-c), editables (-e), bare paths (`./pkg`, `../x`, `/abs`, `~/x`) and --find-links
  directories that resolve (following symlinks) outside the repository;
* `file:` URLs anywhere (`pkg @ file:///...`, `--index-url file:///...`);
* `${VAR}` expansion in paths (its value is not knowable here);
* options that are not requirement-file options (they could point uv at local files).

The refusal message repeats the user's own text, never the content of what it points to.
`has_local_paths` says whether a build needs a writable copy of the source (local packages are built
in-tree by their backends).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import CONFIG_ERROR, BuildFailure

ROOT_FILES = ("pre-requirements.txt", "requirements.txt")
INCLUDE_OPTIONS = frozenset({"-r", "--requirement", "-c", "--constraint"})
PATH_OPTIONS = frozenset({"-e", "--editable", "-f", "--find-links"})
URL_OPTIONS = frozenset({"-i", "--index-url", "--extra-index-url"})
FLAG_OPTIONS = frozenset({"--no-index", "--pre", "--require-hashes", "--prefer-binary"})
VALUE_OPTIONS = frozenset({"--no-binary", "--only-binary", "--trusted-host"})
_OPTION = re.compile(r"^(--?[A-Za-z][\w-]*)(?:[=\s]+(\S+))?")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DIRECT = re.compile(r"^[A-Za-z0-9][\w.-]*(?:\[[^\]]*\])?\s*@\s*(\S+)")
MAX_FILES = 50


@dataclass(frozen=True)
class Line:
    file: str  # relative to the source
    number: int
    text: str


def logical_lines(text: str, file: str) -> list[Line]:
    """Lines with comments stripped and backslash continuations joined (pip/uv semantics)."""
    out: list[Line] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            out.append(Line(file, start, joined))
    if pending.strip():
        out.append(Line(file, start, pending.strip()))
    return out


def _refuse(line: Line, problem: str, fix: str) -> BuildFailure:
    return BuildFailure(CONFIG_ERROR, f"{line.file} line {line.number} (`{line.text}`): {problem}; {fix}")


def _inside(source: Path, base: str, target: str, line: Line, what: str) -> str:
    """The repo-relative path of `target` (relative to file `base`), or a refusal."""
    fix = f"{what} may only name files inside the repository; use a relative path to a file in the repo"
    if "$" in target:
        raise _refuse(line, f"{what} uses variable expansion ({target})", fix)
    if target.startswith("~") or os.path.isabs(target):
        raise _refuse(line, f"{what} points outside the repository ({target})", fix)
    rel = os.path.normpath(os.path.join(os.path.dirname(base), target))
    root = source.resolve()
    resolved = (source / rel).resolve()
    if rel == ".." or rel.startswith("../") or not resolved.is_relative_to(root):
        raise _refuse(line, f"{what} points outside the repository ({target})", fix)
    return rel


def _check_url(source: Path, line: Line, value: str, what: str) -> None:
    if value.lower().startswith("file:"):
        raise _refuse(line, f"{what} is a file: URL ({value})",
                      "name packages from an index (or https URLs), or a relative path inside the repository")
    if not _URL.match(value):
        _inside(source, line.file, value, line, what)


def _check_option(source: Path, line: Line, name: str, value: str | None) -> str | None:
    """Validate one option line; returns an included file (repo-relative) for -r/-c."""
    known = INCLUDE_OPTIONS | PATH_OPTIONS | URL_OPTIONS | FLAG_OPTIONS | VALUE_OPTIONS
    if name not in known:
        raise _refuse(line, f"option {name} is not allowed in requirement files",
                      "keep to package names, -r/-c files in the repo, -e/-f paths in the repo and index URLs")
    if name in FLAG_OPTIONS:
        return None
    if not value:
        raise _refuse(line, f"option {name} needs a value", "add it or remove the line")
    if name in INCLUDE_OPTIONS:
        if _URL.match(value):
            raise _refuse(line, f"{name} names a URL ({value})", "copy that file into the repository and include it by relative path")
        return _inside(source, line.file, value, line, f"{name}")
    if name in PATH_OPTIONS:
        _check_url(source, line, value, name)
    elif name in URL_OPTIONS and not value.lower().startswith(("https://", "http://")):
        raise _refuse(line, f"{name} must be an http(s) URL of a package index ({value})",
                      "use the index's https URL, or put wheels in the repo and use -f with a relative path")
    return None


def _check_requirement(source: Path, line: Line) -> None:
    first = line.text.split()[0]
    direct = _DIRECT.match(line.text)
    if direct:
        _check_url(source, line, direct.group(1), "the requirement's URL")
    elif first.lower().startswith("file:") or _URL.match(first):
        _check_url(source, line, first, "the requirement")
    elif first.startswith((".", "/", "~", "$")) or "/" in first or first.endswith((".whl", ".tar.gz", ".zip")):
        _inside(source, line.file, first, line, "a local requirement")


def check_file(source: Path, rel: str) -> list[str]:
    """Check one requirement file; returns the repo-relative files it includes."""
    path = source / rel
    if not path.resolve().is_relative_to(source.resolve()):
        raise BuildFailure(CONFIG_ERROR, f"{rel} is a symlink to a file outside the repository; "
                                         "commit the file itself instead of a link")
    includes: list[str] = []
    for line in logical_lines(path.read_text(encoding="utf-8", errors="replace"), rel):
        option = _OPTION.match(line.text) if line.text.startswith("-") else None
        if line.text.startswith("-") and option is None:
            raise _refuse(line, "this is not a requirement nor an option", "remove or fix the line")
        if option is not None:
            found = _check_option(source, line, option.group(1), option.group(2))
            if found is not None:
                includes.append(found)
        else:
            _check_requirement(source, line)
    return includes


def check_requirement_files(source: Path) -> list[str]:
    """Refuse outside-pointing lines in every requirement file; returns the files checked (in order)."""
    queue = [name for name in ROOT_FILES if (source / name).is_file() or (source / name).is_symlink()]
    seen: list[str] = []
    while queue:
        rel = queue.pop(0)
        if rel in seen:
            continue
        if len(seen) >= MAX_FILES:
            raise BuildFailure(CONFIG_ERROR, f"requirement files include more than {MAX_FILES} files; flatten them")
        seen.append(rel)
        if not (source / rel).is_file():
            raise BuildFailure(CONFIG_ERROR, f"{rel} is included by a requirement file but is not in the repository")
        queue += check_file(source, rel)
    return seen


def has_local_paths(source: Path) -> bool:
    """Whether any requirement names a local directory or file (built in-tree by its backend)."""
    for rel in check_requirement_files(source):
        for line in logical_lines((source / rel).read_text(encoding="utf-8", errors="replace"), rel):
            option = _OPTION.match(line.text) if line.text.startswith("-") else None
            if option is not None:
                if option.group(1) in ("-e", "--editable", "-f", "--find-links") and not _URL.match(option.group(2) or ""):
                    return True
            elif not _URL.match(line.text.split()[0]) and not _DIRECT.match(line.text) and (
                    line.text.startswith((".", "/")) or "/" in line.text.split()[0]):
                return True
    return False
