"""Which base interpreter a local environment is built with, found on the host (no owner code runs here).

The request is README.md's `python_version`, else the site's default (the hosted default, 3.10). uv finds
interpreters in its managed install dir (`<cache>/pythons`) and on a search path: the admin's extra dirs
(SPACEPORT_BUILD_PYTHON_PATH), every pyenv installation (`$PYENV_ROOT/versions/*/bin`; pyenv's shims
only run the globally selected version and a failing shim aborts uv's discovery, so shim dirs are left
out), then the host PATH. A Python that is not there is downloaded by uv when the admin allows it
(SPACEPORT_BUILD_PYTHON_DOWNLOADS=automatic, from SPACEPORT_BUILD_PYTHON_MIRROR = UV_PYTHON_INSTALL_MIRROR);
otherwise the nearest installed minor is used with a build-log warning (Debian bookworm has only 3.11).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import uv

from builder.baseimages import nearest_python
from builder.errors import BUILD_ERROR, BuildFailure
from builder.sdkdeps import check_version

PATH_SETTING = "SPACEPORT_BUILD_PYTHON_PATH"
DOWNLOADS_SETTING = "SPACEPORT_BUILD_PYTHON_DOWNLOADS"
MIRROR_SETTING = "SPACEPORT_BUILD_PYTHON_MIRROR"
DOWNLOAD_TIMEOUT = 600.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class PythonSource:
    """Where interpreters come from (the admin's choice; uv's own settings underneath)."""

    search_path: tuple[str, ...] = ()  # extra directories searched first
    downloads: bool = False  # uv may download a missing Python (UV_PYTHON_DOWNLOADS=automatic)
    mirror: str = ""  # UV_PYTHON_INSTALL_MIRROR for those downloads


@dataclass(frozen=True)
class Chosen:
    version: str  # major.minor actually built with
    interpreter: Path  # resolved host path (its prefix is bound read-only into the build sandbox)


def search_path(host_path: str, extra: Sequence[str], pyenv_root: Path) -> list[str]:
    """Directories uv searches for interpreters: extra dirs, pyenv installations, the host PATH (no shims)."""
    dirs = list(extra)
    versions = pyenv_root / "versions"
    if versions.is_dir():
        found = [p for p in versions.iterdir() if (p / "bin").is_dir() and not (p / "pyvenv.cfg").exists()]
        dirs += [str(p / "bin") for p in sorted(found, key=lambda p: _key(p.name), reverse=True)]
    dirs += [d for d in host_path.split(os.pathsep) if d and Path(d).name != "shims"]
    return list(dict.fromkeys(dirs))


def discovery_env(env: Mapping[str, str], cache_dir: Path, source: PythonSource) -> dict[str, str]:
    """uv's environment for finding (and, if allowed, downloading) interpreters on the host."""
    out = dict(env)
    pyenv_root = Path(env.get("PYENV_ROOT") or Path.home() / ".pyenv")
    out["PATH"] = os.pathsep.join(search_path(env.get("PATH", ""), source.search_path, pyenv_root))
    out["UV_PYTHON_INSTALL_DIR"] = str(cache_dir / "pythons")
    out["UV_PYTHON_DOWNLOADS"] = "automatic" if source.downloads else "never"
    if source.mirror:
        out["UV_PYTHON_INSTALL_MIRROR"] = source.mirror
    return out


def choose(requested: str, why: str, env: Mapping[str, str], source: PythonSource, log: Log) -> Chosen:
    """The interpreter for `requested` (major.minor), downloaded or the nearest installed one if need be."""
    minor = ".".join(check_version(requested, "python_version").split(".")[:2])
    found = find(minor, env)
    if found is None and source.downloads:
        found = _download(minor, env, source, log)
    if found is not None:
        return Chosen(minor, found)
    installed = installed_minors(env)
    nearest = nearest_python(minor, [v for v in installed if v.startswith("3.")])
    fallback = find(nearest, env) if nearest else None
    if nearest is None or fallback is None:
        raise BuildFailure(BUILD_ERROR, f"no Python {minor} ({why}) on this server and no other Python 3 to fall back "
                                        f"to; ask the admin to install one or to set {DOWNLOADS_SETTING}=automatic")
    log(f"warning: Python {minor} ({why}) is not installed on this server (installed: {', '.join(installed) or 'none'}); "
        f"building with the nearest, Python {nearest}. Admins: install Python {minor} where uv finds it "
        f"({PATH_SETTING}) or let uv download it ({DOWNLOADS_SETTING}=automatic, {MIRROR_SETTING})")
    return Chosen(nearest, fallback)


def find(minor: str, env: Mapping[str, str]) -> Path | None:
    found = subprocess.run([uv.find_uv_bin(), "python", "find", "--system", "--no-config", minor],
                           env=dict(env), capture_output=True, text=True, check=False, cwd="/")
    if found.returncode != 0 or not found.stdout.strip():
        return None
    return Path(found.stdout.strip().splitlines()[-1]).resolve()


def installed_minors(env: Mapping[str, str]) -> list[str]:
    """The CPython minors uv can find here, ascending."""
    listed = subprocess.run([uv.find_uv_bin(), "python", "list", "--only-installed", "--no-config", "--output-format",
                             "json"], env=dict(env), capture_output=True, text=True, check=False, cwd="/")
    try:
        entries = json.loads(listed.stdout or "[]")
    except ValueError:
        return []
    minors = {".".join(str(e.get("version", "")).split(".")[:2]) for e in entries
              if isinstance(e, dict) and e.get("implementation") == "cpython"}
    return sorted((m for m in minors if m.count(".") == 1), key=_key)


def _download(minor: str, env: Mapping[str, str], source: PythonSource, log: Log) -> Path | None:
    where = f" from {source.mirror}" if source.mirror else ""
    log(f"Python {minor} is not installed on this server; uv downloads it{where} ({DOWNLOADS_SETTING}=automatic)")
    try:
        done = subprocess.run([uv.find_uv_bin(), "python", "install", "--no-config", minor], env=dict(env),
                              capture_output=True, text=True, check=False, cwd="/", timeout=DOWNLOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        log(f"warning: downloading Python {minor} took longer than {DOWNLOAD_TIMEOUT:.0f} s")
        return None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        log(f"warning: downloading Python {minor} failed: {last[0]}")
        return None
    return find(minor, env)


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


# --- requirements written for other Pythons ---------------------------------------------------------

_MARKER_CLAUSE = re.compile(r"""python_version\s*(<=|>=|==|!=|<|>)\s*["']([0-9]+(?:\.[0-9]+)*)["']""")
_OTHER_CLAUSE = re.compile(r"""(platform_system|platform_machine|sys_platform|os_name|platform_python_implementation|"""
                           r"""implementation_name)\s*(==|!=)\s*["'][^"']*["']""")
_CANDIDATES = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")


def _marker_allows(marker: str, minor: str) -> bool | None:
    """Whether a marker of `python_version OP "X.Y"` clauses joined by `and` / `or` (and binding tighter, no
    parentheses) admits `minor`; platform clauses (`platform_system == "Linux"`) are the same on every Python
    and are passed over (taken as true). None: the marker says nothing of the Python version, or something
    not understood here (parentheses, `python_full_version`, `in`)."""
    if re.search(r"[()]|python_full_version", marker):
        return None
    have = _key(minor)
    judged = allowed = False
    for branch in re.split(r"\bor\b", marker):
        ok = True
        for clause in (c.strip() for c in re.split(r"\band\b", branch)):
            found = _MARKER_CLAUSE.fullmatch(clause)
            if found is None:
                if _OTHER_CLAUSE.fullmatch(clause):
                    continue  # the same whatever the Python
                return None
            judged = True
            op, want = found.group(1), _key(found.group(2))
            ok = ok and {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want,
                         "==": have[:len(want)] == want, "!=": have[:len(want)] != want}[op]
        allowed = allowed or ok
    return allowed if judged else None


def requirements_python(text: str, default: str) -> str | None:
    """The Python a requirements file was written for, when it is not `default` (None: keep the default).

    Poetry/pip-compile exports mark every line (`folium==0.14.0 ; python_version >= "3.8" and
    python_version < "3.10"`): on any other Python the installer skips them all and the app then fails
    with `No module named ...` (AaronBarbosa12/twitter_sentiment_ml). Only when every marked line excludes
    the default and no unmarked requirement exists is the newest Python that all of them admit chosen."""
    marked: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        if ";" not in line:
            return None
        marked.append(line.split(";", 1)[1])
    verdicts = [[_marker_allows(m, minor) for m in marked] for minor in _CANDIDATES]
    if not marked or any(v is None for row in verdicts for v in row):
        return None
    if all(_marker_allows(m, default) is False for m in marked):
        fits = [minor for minor, row in zip(_CANDIDATES, verdicts, strict=True) if all(row)]
        return fits[-1] if fits else None
    return None


def requested(python_version: str | None, source: Path, default: str, log: Log) -> tuple[str, str]:
    """(minor, why): README.md's python_version, else the Python every line of requirements.txt is marked for
    (logged), else the site default. Both builders (local venv and image) start from this."""
    if python_version:
        return python_version, "python_version in README.md"
    requirements = source / "requirements.txt"
    marked = requirements_python(requirements.read_text(errors="replace"), default) if requirements.is_file() else None
    if marked is None:
        return default, "the default python_version, as on Hugging Face Spaces"
    log(f"spaceport: README.md sets no python_version and every line of requirements.txt is marked for "
        f"other Pythons than {default} (they would all be skipped): building with Python {marked}")
    return marked, "the python_version markers of requirements.txt"
