"""BuildPack contract (repo2docker style): pure `detect(files)`, `render(config, ctx)` -> Dockerfile text.

Rendered Dockerfiles are layered for the cache: base FROM, (CA certificates, injected by
builder.image right after FROM), apt packages.txt, pre-requirements, requirements + pinned sdk,
build ARGs (space variables), COPY of the source, LABELs last. Secrets are never build args.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from builder.spaceconfig import SpaceConfig

APP_DIR = "/home/user/app"
CONTAINER_PORT = 7860
_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "node_modules"})
_TEXT_FILES = ("app.py",)
STREAMLIT_IMPORT = re.compile(r"^\s*(import streamlit|from streamlit\b)", re.MULTILINE)


@dataclass(frozen=True)
class RepoFiles:
    """What detect() may look at: relative POSIX paths and the text of a few well-known files."""

    paths: frozenset[str]
    texts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def scan(cls, repo: Path) -> RepoFiles:
        paths = frozenset(
            p.relative_to(repo).as_posix()
            for p in repo.rglob("*")
            if not _SKIP_DIRS.intersection(p.relative_to(repo).parts) and (p.is_file() or p.is_symlink())
        )
        texts = {
            name: (repo / name).read_text(encoding="utf-8", errors="replace")[:200_000]
            for name in _TEXT_FILES
            if name in paths
        }
        return cls(paths=paths, texts=texts)


@dataclass(frozen=True)
class RenderContext:
    """Inputs of render() besides the config."""

    files: RepoFiles
    build_arg_names: tuple[str, ...] = ()
    dockerfile: str | None = None  # the user's Dockerfile text (docker sdk)
    labels: Mapping[str, str] = field(default_factory=dict)


class BuildPack(ABC):
    sdk: ClassVar[str]

    @abstractmethod
    def detect(self, files: RepoFiles) -> bool:
        """Whether this pack can build a repository with these files (pure)."""

    @abstractmethod
    def render(self, config: SpaceConfig, ctx: RenderContext) -> str:
        """Dockerfile text for this space."""


class PythonAppBuildPack(BuildPack):
    """Shared skeleton for the Python SDKs (gradio, streamlit, static)."""

    def render(self, config: SpaceConfig, ctx: RenderContext) -> str:
        parts = [
            f"FROM python:{config.python}",
            *self.apt_layer(ctx.files),
            *self.user_layer(),
            *self.dependency_layers(config, ctx.files),
            *[f"ARG {name}" for name in ctx.build_arg_names],
            f"COPY --chown=1000:1000 . {APP_DIR}",
            f"EXPOSE {CONTAINER_PORT}",
            f"CMD {json.dumps(self.command(config))}",
            *label_lines({"io.spaceport.sdk": self.sdk, **ctx.labels}),
        ]
        return "\n".join(parts) + "\n"

    def environment(self) -> dict[str, str]:
        return {
            "HOME": "/home/user",
            "PATH": "/home/user/.local/bin:$PATH",
            "PYTHONUNBUFFERED": "1",
            "PIP_NO_CACHE_DIR": "1",
            "GRADIO_SERVER_NAME": "0.0.0.0",
            "GRADIO_SERVER_PORT": str(CONTAINER_PORT),
            "PORT": str(CONTAINER_PORT),
        }

    @staticmethod
    def apt_layer(files: RepoFiles) -> list[str]:
        if "packages.txt" not in files.paths:
            return []
        return [
            "COPY packages.txt /tmp/spaceport/packages.txt",
            "RUN apt-get update \\\n && sed -e 's/#.*//' /tmp/spaceport/packages.txt"
            " | xargs -r apt-get install -y --no-install-recommends \\\n && rm -rf /var/lib/apt/lists/*",
        ]

    def user_layer(self) -> list[str]:
        env = " ".join(f"{k}={v}" for k, v in self.environment().items())
        return [
            "RUN (id -u 1000 >/dev/null 2>&1 || useradd -m -u 1000 user) && mkdir -p /home/user/app"
            " && chown -R 1000:1000 /home/user",
            "USER 1000",
            f"ENV {env}",
            f"WORKDIR {APP_DIR}",
        ]

    def dependency_layers(self, config: SpaceConfig, files: RepoFiles) -> list[str]:
        lines: list[str] = []
        if "pre-requirements.txt" in files.paths:
            lines += [
                f"COPY --chown=1000:1000 pre-requirements.txt {APP_DIR}/pre-requirements.txt",
                "RUN pip install --no-cache-dir --progress-bar off -r pre-requirements.txt",
            ]
        packages = self.sdk_requirements(config)
        if "requirements.txt" in files.paths:
            lines.append(f"COPY --chown=1000:1000 requirements.txt {APP_DIR}/requirements.txt")
            lines.append("RUN pip install --no-cache-dir --progress-bar off -r requirements.txt " + " ".join(json.dumps(p) for p in packages))
        elif packages:
            lines.append("RUN pip install --no-cache-dir --progress-bar off " + " ".join(json.dumps(p) for p in packages))
        return lines

    def sdk_requirements(self, config: SpaceConfig) -> list[str]:
        """The sdk package, pinned to sdk_version when set."""
        return [f"{self.sdk}=={config.sdk_version}" if config.sdk_version else self.sdk]

    @abstractmethod
    def command(self, config: SpaceConfig) -> list[str]:
        """The container CMD."""


def label_lines(labels: Mapping[str, str]) -> list[str]:
    if not labels:
        return []
    return ["LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))]
