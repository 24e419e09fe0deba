"""The dependency set the hosted platform gives each SDK, in one place (see runtime-images/README.md).

Hugging Face Spaces builds a gradio/streamlit space roughly as:
  1. base packages pre-installed in every SDK image: `datasets`, `huggingface_hub`, `hf-transfer`
     (and so `requests`, a dependency of datasets; we list it since gradio 5.x's CLI needs it);
  2. `pre-requirements.txt` (e.g. to upgrade pip itself), then `requirements.txt`;
  3. the SDK pin from `sdk_version` AFTER the requirements, so the pin wins over whatever gradio the
     requirements named: `gradio[oauth]==X "uvicorn>=0.14.0" spaces` (+ `"fastapi<0.113.0"` next to
     gradio 4.x), or `streamlit==X`.
System packages (git, git-lfs, ffmpeg, libsm6, libxext6, libGL, cmake, rsync, a compiler) come with the
SDK base image (runtime-images/sdk), not from here.

Today's libraries break old pins, so each install step also gets:
  * per-SDK-line constraints, for incompatibilities seen with real repos:
      - gradio < 5: `huggingface_hub<1` (1.0 removed `HfFolder`, which gradio 4.x imports), `numpy<2`
        (modules built against numpy 1 fail with `numpy.core.multiarray failed to import`),
        `fastapi<0.113` (fastapi 0.113 broke gradio < 4.44; it also caps starlette, whose 1.0 dropped the
        `TemplateResponse(name, context)` form gradio 3.x/4.x call: `TypeError: unhashable type: 'dict'`),
        `pydantic<2.11` for gradio 4.x (gradio_client's schema walk fails on pydantic 2.11 schemas);
      - gradio < 4 and streamlit < 1.20: `setuptools<81` (81 removed `pkg_resources`, which they import);
      - streamlit < 1.20: `altair<5` (altair 5 removed `altair.vegalite.v4`); streamlit < 1.36: `numpy<2`;
      - streamlit < 1.10: `protobuf<4` (its `_pb2` modules predate protoc 3.19: protobuf 4 says "Descriptors
        cannot be created directly"; 1.10 capped protobuf itself); streamlit < 1.9: `click<8.1` (8.1 removed
        `click.get_os_args`, which `streamlit run` called; the hosted base images carried the same pin);
  * "as of the SDK release date": uv's `--exclude-newer DATE`, the upload date of the pinned SDK version
    on the package index (no earlier than the Python minor's first months, when its wheels appeared), so
    unpinned dependencies resolve to what existed when that SDK version was current. A step whose
    resolution fails with the date (a requirement pinned newer than it) is retried without the date,
    keeping the constraints, and says so in the build log. `hf-transfer` (a platform addition younger
    than many SDK releases, with no dependencies) is exempt from the date.
`install_plan(config, files, release)` is pure; `sdk_release_date()` asks the index (cached on disk, with
an offline fallback to the constraints alone). Both builders (image buildpacks, local venv) use the plan.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from builder.errors import CONFIG_ERROR, BuildFailure
from builder.spaceconfig import SpaceConfig

INDEX_SETTING = "SPACEPORT_PYPI_URL"
DEFAULT_INDEX = "https://pypi.org"
BASE_PACKAGES = ("datasets", "huggingface_hub", "hf-transfer", "requests")
# Platform additions newer than many SDK releases, without dependencies of their own: never dated.
UNDATED_PACKAGES = ("hf-transfer",)
NO_DATE = "2999-01-01T00:00:00Z"
SDK_EXTRAS = ("uvicorn>=0.14.0",)  # beside gradio, like the hosted builder
_VERSION = re.compile(r"^[0-9]+(?:\.[0-9]+)*(?:[._-]?(?:a|b|rc|alpha|beta|c|pre|preview|post|dev)[0-9]*)*(?:\+[A-Za-z0-9.]+)?$")
# No earlier than this for a Python minor: before it, most packages had no wheels for that Python.
PYTHON_WHEEL_FLOOR = {"3.8": "2019-12-01", "3.9": "2020-11-15", "3.10": "2021-11-15", "3.11": "2022-11-15",
                      "3.12": "2023-11-15", "3.13": "2024-11-15", "3.14": "2025-11-15"}
RELEASE_SLACK = timedelta(days=1)  # the SDK's companion packages (gradio_client) ship the same day


@dataclass(frozen=True)
class InstallStep:
    """One install: requirement specifiers and/or requirement files, constraints, an optional date."""

    what: str
    requirements: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    exclude_newer: str | None = None  # RFC 3339, for uv's --exclude-newer
    undated: tuple[str, ...] = ()  # packages exempt from the date (uv's --exclude-newer-package)

    def uv_args(self, constraints_file: str | None) -> list[str]:
        """`uv pip install` arguments (without the interpreter/target); constraints come from a file."""
        args = [arg for name in self.files for arg in ("-r", name)] + list(self.requirements)
        if constraints_file and self.constraints:
            args += ["--constraint", constraints_file]
        if self.exclude_newer:
            args += ["--exclude-newer", self.exclude_newer]
            args += [arg for name in self.undated for arg in ("--exclude-newer-package", f"{name}={NO_DATE}")]
        return args

    def without_date(self) -> InstallStep:
        """The same install resolved with today's packages (the retry when the dated one fails)."""
        return replace(self, exclude_newer=None)

    def retry_note(self) -> str:
        """What the build log says before that retry."""
        return (f"{self.what} cannot resolve as of {self.exclude_newer} (a requirement is newer than the "
                "sdk_version); retrying with today's packages")


@dataclass(frozen=True)
class InstallPlan:
    steps: tuple[InstallStep, ...]
    constraints: tuple[str, ...]
    exclude_newer: str | None
    notes: tuple[str, ...] = field(default=())

    def constraints_text(self) -> str:
        return "".join(f"{line}\n" for line in self.constraints)


def check_version(version: str, key: str = "sdk_version") -> str:
    if not _VERSION.match(version):
        raise BuildFailure(CONFIG_ERROR, f"{key} {version!r} in README.md is not a version number (e.g. 4.44.1)")
    return version


def _key(version: str | None) -> tuple[int, ...]:
    if not version:
        return (10_000,)  # unpinned: today's release line
    parts = re.findall(r"\d+", version)[:3]
    return tuple(int(p) for p in parts)


def sdk_constraints(sdk: str, version: str | None) -> tuple[str, ...]:
    """Constraints for the SDK line of `version` (unpinned: none)."""
    v = _key(version)
    out: list[str] = []
    if sdk == "gradio":
        if v < (5,):
            out += ["huggingface_hub<1", "fastapi<0.113", "numpy<2"]
        if (4,) <= v < (5,):
            out.append("pydantic<2.11")
        if v < (4,):
            out.append("setuptools<81")
    elif sdk == "streamlit":
        if v < (1, 20):
            out += ["setuptools<81", "altair<5"]
        if v < (1, 9):
            out.append("click<8.1")
        if v < (1, 10):
            out.append("protobuf<4")
        if v < (1, 36):
            out.append("numpy<2")
    return tuple(out)


def sdk_requirements(sdk: str, version: str | None) -> tuple[str, ...]:
    """The SDK step's requirements: the pin (with the hosted builder's companions)."""
    pin = f"=={check_version(version)}" if version else ""
    if sdk == "gradio":
        new = _key(version) >= (4,)
        extras = [*SDK_EXTRAS, *(("spaces",) if new else ())]
        if (4,) <= _key(version) < (5,):
            extras.append("fastapi<0.113.0")
        if _key(version) < (4,):
            extras.append("setuptools<81")  # pkg_resources
        return (f"gradio[oauth]{pin}" if new else f"gradio{pin}", *extras)
    if sdk == "streamlit":
        return (f"streamlit{pin}", *(("setuptools<81",) if _key(version) < (1, 20) else ()))
    return ()


_REQUIREMENT_PIN = re.compile(r"^\s*(gradio|streamlit)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#,]+)\s*(?:[;#].*)?$", re.I)


def requirements_pin(sdk: str, text: str) -> str | None:
    """The version requirements.txt pins the SDK to exactly (`streamlit==0.80.0`), if any."""
    for line in text.splitlines():
        found = _REQUIREMENT_PIN.match(line)
        if found and found.group(1).lower() == sdk and _VERSION.match(found.group(2)):
            return found.group(2)
    return None


def with_requirements_pin(config: SpaceConfig, source: Path, log: Callable[[str], None]) -> SpaceConfig:
    """Without sdk_version, the SDK version requirements.txt pins is the one that runs: its constraints and
    release date apply (an old `streamlit==0.80.0` otherwise resolves against today's protobuf)."""
    path = source / "requirements.txt"
    if config.sdk not in ("gradio", "streamlit") or config.sdk_version or not path.is_file():
        return config
    version = requirements_pin(config.sdk, path.read_text(errors="replace"))
    if version is None:
        return config
    log(f"spaceport: README.md sets no sdk_version and requirements.txt pins {config.sdk}=={version}: "
        f"building for {config.sdk} {version} (its constraints and release date)")
    return replace(config, sdk_version=version)


def effective_date(release: datetime | None, python: str) -> str | None:
    """--exclude-newer for this SDK release on this Python (None: no date known)."""
    if release is None:
        return None
    date = release + RELEASE_SLACK
    floor = PYTHON_WHEEL_FLOOR.get(python)
    if floor is not None:
        date = max(date, datetime.fromisoformat(floor).replace(tzinfo=UTC))
    return date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def install_plan(config: SpaceConfig, files: Collection[str], release: datetime | None,
                 base_packages: Sequence[str] = BASE_PACKAGES) -> InstallPlan:
    """The ordered installs for a gradio/streamlit space (empty for docker/static): pure.

    `base_packages`: what every environment gets first (the hosted set by default; none: no base step).
    """
    if config.sdk not in ("gradio", "streamlit"):
        return InstallPlan(steps=(), constraints=(), exclude_newer=None)
    constraints = sdk_constraints(config.sdk, config.sdk_version)
    date = effective_date(release, config.python) if config.sdk_version else None
    common = {"constraints": constraints, "exclude_newer": date}
    undated = tuple(name for name in UNDATED_PACKAGES if name in base_packages)
    steps = [InstallStep("base packages", requirements=tuple(base_packages), undated=undated, **common)  # type: ignore[arg-type]
             ] if base_packages else []
    steps += [InstallStep(name, files=(name,), **common)  # type: ignore[arg-type]
              for name in ("pre-requirements.txt", "requirements.txt") if name in files]
    pin = sdk_requirements(config.sdk, config.sdk_version)
    steps.append(InstallStep(f"{config.sdk} sdk pin", requirements=pin, **common))  # type: ignore[arg-type]
    notes = [f"installing {' then '.join(s.what for s in steps)}: the sdk_version pin is installed last, "
             "so it wins over requirements.txt (as on Hugging Face Spaces)"]
    if date:
        notes.append(f"unpinned dependencies resolve as of {date} ({config.sdk} {config.sdk_version}'s release)")
    elif config.sdk_version:
        notes.append(f"release date of {config.sdk} {config.sdk_version} unknown (index unreachable): "
                     "resolving with today's packages and the sdk line's constraints only")
    if constraints:
        notes.append(f"constraints for {config.sdk} {config.sdk_version}: {', '.join(constraints)}")
    return InstallPlan(steps=tuple(steps), constraints=constraints, exclude_newer=date, notes=tuple(notes))


# --- release dates from the package index (impure) -------------------------------------------------

Fetch = Callable[[str, float], bytes]


def _http_get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "spaceport-builder"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(64 * 1024 * 1024)
        return data


def default_cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "spaceport" / "sdk-release-dates.json"


def sdk_release_date(
    package: str,
    version: str,
    *,
    index: str | None = None,
    cache_file: Path | None = None,
    fetch: Fetch = _http_get,
    timeout: float = 10.0,
) -> datetime | None:
    """Upload time of `package==version` from the index's JSON API (`{index}/pypi/{name}/json`).

    Cached on disk per index (dates never change); None when the index cannot be reached or does not
    know the version (the plan then falls back to the constraints alone).
    """
    base = (index or os.environ.get(INDEX_SETTING) or DEFAULT_INDEX).rstrip("/")
    cache_path = cache_file or default_cache_file()
    key = f"{base} {package.lower()}=={version}"
    cache = _read_cache(cache_path)
    if key in cache:
        return datetime.fromisoformat(cache[key])
    try:
        data = json.loads(fetch(f"{base}/pypi/{package}/json", timeout))
    except (OSError, urllib.error.URLError, ValueError):
        return None
    found = _upload_time(data, version)
    if found is None:
        return None
    cache[key] = found.isoformat()
    _write_cache(cache_path, cache)
    return found


def _upload_time(data: object, version: str) -> datetime | None:
    releases = data.get("releases") if isinstance(data, dict) else None
    files = releases.get(version) if isinstance(releases, dict) else None
    if not isinstance(files, list):
        return None
    times = [f.get("upload_time_iso_8601") or f.get("upload_time") for f in files if isinstance(f, dict)]
    parsed = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times if isinstance(t, str)]
    stamps = [p if p.tzinfo else p.replace(tzinfo=UTC) for p in parsed]
    return min(stamps) if stamps else None


def _read_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_cache(path: Path, cache: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True, indent=0))
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs a lookup next time


def release_for(config: SpaceConfig, **kwargs: object) -> datetime | None:
    """The pinned SDK version's release date (None when unpinned, docker/static, or unknown)."""
    if config.sdk not in ("gradio", "streamlit") or not config.sdk_version:
        return None
    return sdk_release_date(config.sdk, check_version(config.sdk_version), **kwargs)  # type: ignore[arg-type]
