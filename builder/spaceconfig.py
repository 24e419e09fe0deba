"""A space's configuration: Hugging Face README front matter (or ModelScope ms_deploy.json).

`load_space_config(repo)` reads a checked-out space and returns a `SpaceConfig`; without any
configuration the sdk is inferred from the files and a note says so. Problems raise
`SpaceConfigError` with stage CONFIG_ERROR or NO_APP_FILE and a message saying what to fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.envnames import reserved_reason
from builder.errors import CONFIG_ERROR, NO_APP_FILE, SpaceConfigError

SDKS = ("gradio", "streamlit", "docker", "static")
DEFAULT_PYTHON = "3.10"  # the hosted default python_version (builds fall back to the nearest installed)
DEFAULT_PORT = 7860
DEFAULT_STARTUP_TIMEOUT = 30 * 60
MAX_README_BYTES = 1024 * 1024
MAX_MS_DEPLOY_BYTES = 64 * 1024
MAX_FRONT_MATTER_BYTES = 64 * 1024
MAX_FRONT_MATTER_NODES = 10_000
README = "README.md"
# The Docker CLI's rule: `Dockerfile`, else the lower-case `dockerfile` (some Space repos use that name).
DOCKERFILE_NAMES = ("Dockerfile", "dockerfile")
MS_DEPLOY = "ms_deploy.json"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SpaceConfig:
    """HF Spaces configuration keys (snake_case for colorFrom/colorTo) plus what the builder inferred."""

    sdk: str
    title: str | None = None
    emoji: str | None = None
    color_from: str | None = None
    color_to: str | None = None
    sdk_version: str | None = None
    python_version: str | None = None
    app_file: str = "app.py"
    app_port: int = DEFAULT_PORT
    base_path: str = "/"
    short_description: str | None = None
    suggested_hardware: str | None = None
    startup_duration_timeout: int = DEFAULT_STARTUP_TIMEOUT
    custom_headers: dict[str, str] = field(default_factory=dict)
    pinned: bool = False
    tags: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    license: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    inferred: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def python(self) -> str:
        """The Python version to build with (python_version or the default)."""
        return self.python_version or DEFAULT_PYTHON


def parse_front_matter(text: str, filename: str = README) -> dict[str, Any]:
    """The YAML front matter of a README as a dict ({} when there is none).

    Raises SpaceConfigError(CONFIG_ERROR) for malformed YAML (naming file and line), an unclosed
    block, a non-mapping document, or a README larger than 1 MB.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_README_BYTES:
        raise SpaceConfigError(CONFIG_ERROR, f"{filename} is larger than 1 MB; shorten it so its front matter can be read")
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise SpaceConfigError(CONFIG_ERROR, f"{filename}: the YAML front matter starting on line 1 is never closed; add a line '---' after it")
    return _load_yaml("\n".join(lines[1:end]), filename)


def _load_yaml(block: str, filename: str) -> dict[str, Any]:
    if len(block.encode("utf-8", errors="replace")) > MAX_FRONT_MATTER_BYTES:
        raise SpaceConfigError(CONFIG_ERROR, f"{filename}: the YAML front matter is larger than "
                               f"{MAX_FRONT_MATTER_BYTES // 1024} KB; move long text below the closing '---'")
    try:
        data = _bounded_safe_load(block, filename)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark is not None else 1  # +1 for 1-based, +1 for the opening '---'
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpaceConfigError(CONFIG_ERROR, f"{filename} line {line}: malformed YAML front matter: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpaceConfigError(CONFIG_ERROR, f"{filename}: malformed YAML front matter: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpaceConfigError(CONFIG_ERROR, f"{filename}: the front matter must be a YAML mapping of keys (sdk: gradio, ...)")
    return data


def _bounded_safe_load(block: str, filename: str) -> Any:
    """yaml.safe_load that refuses alias bombs: the document, with every alias expanded, may hold at
    most MAX_FRONT_MATTER_NODES nodes (a few anchors reused a few times pass; a 340-byte bomb does not)."""
    loader = yaml.SafeLoader(block)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_FRONT_MATTER_NODES:
            raise SpaceConfigError(CONFIG_ERROR, f"{filename}: the YAML front matter expands to more than "
                                   f"{MAX_FRONT_MATTER_NODES} values through anchors and aliases (&name / *name); "
                                   "write the values out instead of reusing them")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of nodes once aliases are expanded (aliased nodes are shared objects: memoized by id)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = MAX_FRONT_MATTER_NODES + 1  # a recursive alias counts as too big
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size = min(size, MAX_FRONT_MATTER_NODES + 1)
    return size


def parse_duration(value: object) -> int:
    """'30m' / '1h' / '90s' / 120 -> seconds."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(value)
    return int(match.group(1)) * _UNITS[match.group(2)]


def load_space_config(repo: Path) -> SpaceConfig:
    """Read README.md front matter (else ms_deploy.json, else infer from files) and validate it."""
    notes: list[str] = []
    meta = _read_readme(repo)
    inferred = False
    if "sdk" not in meta:
        ms = _read_ms_deploy(repo)
        if ms:
            meta = {**ms, **meta}
            notes.append(f"using {MS_DEPLOY} (sdk_type={ms.get('sdk')})")
    if "sdk" not in meta:
        meta["sdk"] = _infer_sdk(repo)
        inferred = True
        where = "no 'sdk' in README.md front matter" if (repo / README).is_file() else "no README.md"
        notes.append(f"{where}: inferred sdk={meta['sdk']} from the files; add 'sdk: {meta['sdk']}' to README.md front matter to make it explicit")
    config = _build_config(meta, inferred, notes)
    _check_app_file(repo, config)
    return config


def _read_readme(repo: Path) -> dict[str, Any]:
    path = repo / README
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_README_BYTES:
        raise SpaceConfigError(CONFIG_ERROR, f"{README} is larger than 1 MB; shorten it so its front matter can be read")
    return parse_front_matter(path.read_text(encoding="utf-8", errors="replace"))


def _read_ms_deploy(repo: Path) -> dict[str, Any]:
    """ModelScope's ms_deploy.json mapped onto HF keys."""
    path = repo / MS_DEPLOY
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_MS_DEPLOY_BYTES:
        raise SpaceConfigError(CONFIG_ERROR, f"{MS_DEPLOY} is larger than 64 KB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpaceConfigError(CONFIG_ERROR, f"{MS_DEPLOY} line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise SpaceConfigError(CONFIG_ERROR, f"{MS_DEPLOY} must be a JSON object")
    mapped: dict[str, Any] = {}
    for src, dst in (("sdk_type", "sdk"), ("sdk_version", "sdk_version"), ("port", "app_port"),
                     ("resource_configuration", "suggested_hardware"), ("app_file", "app_file")):
        if data.get(src) not in (None, ""):
            mapped[dst] = data[src]
    mapped["env"] = _ms_env(data.get("environment_variables"))
    return mapped


def _ms_env(value: object) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return {str(i["name"]): str(i.get("value", "")) for i in value if isinstance(i, dict) and "name" in i}
    return {}


def _infer_sdk(repo: Path) -> str:
    from builder import buildpacks  # the chain imports this module

    pack = buildpacks.detect(buildpacks.RepoFiles.scan(repo))
    if pack is None:
        raise SpaceConfigError(
            NO_APP_FILE,
            "no app found: add README.md front matter with 'sdk:' and an app.py (Gradio/Streamlit), "
            "a Dockerfile (Docker) or an index.html (static)",
        )
    return pack.sdk


def _build_config(meta: dict[str, Any], inferred: bool, notes: list[str]) -> SpaceConfig:
    sdk = str(meta["sdk"]).strip().lower()
    if sdk not in SDKS:
        raise SpaceConfigError(CONFIG_ERROR, f"unknown sdk {meta['sdk']!r} in README.md; use one of: {', '.join(SDKS)}")
    return SpaceConfig(
        sdk=sdk,
        title=_opt_str(meta, "title"),
        emoji=_opt_str(meta, "emoji"),
        color_from=_opt_str(meta, "colorFrom"),
        color_to=_opt_str(meta, "colorTo"),
        sdk_version=_opt_str(meta, "sdk_version"),
        python_version=_opt_str(meta, "python_version"),
        app_file=_app_file(meta, sdk),
        app_port=_port(meta),
        base_path=_opt_str(meta, "base_path") or "/",
        short_description=_opt_str(meta, "short_description"),
        suggested_hardware=_opt_str(meta, "suggested_hardware"),
        startup_duration_timeout=_startup_timeout(meta),
        custom_headers=_str_dict(meta, "custom_headers"),
        pinned=bool(meta.get("pinned", False)),
        tags=_str_list(meta, "tags"),
        models=_str_list(meta, "models"),
        datasets=_str_list(meta, "datasets"),
        license=_opt_str(meta, "license"),
        env=_env(meta),
        inferred=inferred,
        notes=notes,
    )


def _opt_str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise SpaceConfigError(CONFIG_ERROR, f"README.md: '{key}' must be a single value, not {type(value).__name__}")
    return str(value)


def _app_file(meta: dict[str, Any], sdk: str) -> str:
    default = "index.html" if sdk == "static" else ("Dockerfile" if sdk == "docker" else "app.py")
    value = _opt_str(meta, "app_file") or default
    if value.startswith("/") or ".." in Path(value).parts:
        raise SpaceConfigError(CONFIG_ERROR, f"README.md: app_file {value!r} must be a path inside the repository")
    return value


def _port(meta: dict[str, Any]) -> int:
    value = meta.get("app_port", DEFAULT_PORT)
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise SpaceConfigError(CONFIG_ERROR, f"README.md: app_port {value!r} must be a port number between 1 and 65535")
    return port


def _startup_timeout(meta: dict[str, Any]) -> int:
    value = meta.get("startup_duration_timeout", "30m")
    try:
        return parse_duration(value)
    except ValueError:
        raise SpaceConfigError(
            CONFIG_ERROR, f"README.md: startup_duration_timeout {value!r} must look like 30m, 1h or 90s"
        ) from None


def _str_list(meta: dict[str, Any], key: str) -> list[str]:
    value = meta.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise SpaceConfigError(CONFIG_ERROR, f"README.md: '{key}' must be a list")
    return [str(v) for v in value]


def _str_dict(meta: dict[str, Any], key: str) -> dict[str, str]:
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceConfigError(CONFIG_ERROR, f"README.md: '{key}' must be a mapping of names to values")
    return {str(k): str(v) for k, v in value.items()}


def _env(meta: dict[str, Any]) -> dict[str, str]:
    """Front-matter `env`: names an owner may set (the platform's own names are refused, saying why)."""
    env = _str_dict(meta, "env")
    for key in env:
        if not _ENV_NAME.match(key):
            raise SpaceConfigError(CONFIG_ERROR, f"README.md: env name {key!r} is not an environment variable name; "
                                   "use letters, digits and '_', not starting with a digit (e.g. MODEL_ID)")  # fmt: skip
        why = reserved_reason(key)
        if why is not None:
            raise SpaceConfigError(CONFIG_ERROR, f"README.md: env {why}")
    return env


def dockerfile_path(repo: Path) -> Path | None:
    """The repository's Dockerfile (`Dockerfile`, else `dockerfile`, as `docker build` looks), or None."""
    return next((repo / name for name in DOCKERFILE_NAMES if (repo / name).is_file()), None)


def is_readme_card(repo: Path, config: SpaceConfig) -> bool:
    """A static space with README.md and no index.html: Hugging Face shows the README (organization cards)."""
    return (config.sdk == "static" and config.app_file == "index.html" and not (repo / "index.html").is_file()
            and (repo / README).is_file())


def _check_app_file(repo: Path, config: SpaceConfig) -> None:
    target = "Dockerfile" if config.sdk == "docker" else config.app_file
    found = dockerfile_path(repo) is not None if config.sdk == "docker" else (repo / target).is_file()
    if is_readme_card(repo, config):
        config.notes.append("no index.html: the page is README.md rendered, as Hugging Face shows a static space "
                            "without one (an organization card); add index.html to serve your own page")
        return
    if not found:
        what = {"docker": "Docker spaces need a Dockerfile at the repository root"}.get(
            config.sdk, f"sdk {config.sdk} runs {target}; add it or set app_file in README.md"
        )
        raise SpaceConfigError(NO_APP_FILE, f"{target} not found: {what}")
