"""BuildPack contract (repo2docker style): pure `detect(files)`, `render(config, ctx)` -> Dockerfile text.

Rendered Dockerfiles are layered for the cache: base FROM (spaceport/base-sdk:<python>, the hosted SDK
image's system packages + uv), (CA certificates, injected by builder.image right after FROM), apt
packages.txt, the uid-1000 user and environment, then the install plan of builder.sdkdeps: base
packages, pre-requirements, requirements, the SDK pin last (so it wins), each a `uv pip install` with the
SDK line's constraints and `--exclude-newer` at the SDK release (retried without the date if that cannot
resolve); build ARGs (space variables), COPY of the source, LABELs last. Secrets are never build args.
The environment is the hosted one: HOME=/home/user, a writable /home/user/app owned by uid 1000,
SYSTEM=spaces; SPACE_* variables come from the runtime, and no proxy variable is ever baked in.
"""

from __future__ import annotations

import json
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from builder.baseimages import sdk_base
from builder.envnames import HOSTED_SDK_DEFAULTS, hosted_app_env
from builder.sdkdeps import InstallPlan, InstallStep, install_plan
from builder.spaceconfig import SpaceConfig

APP_DIR = "/home/user/app"
CONSTRAINTS_FILE = "/home/user/.spaceport/constraints.txt"
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
    sdk_release: datetime | None = None  # upload date of the pinned sdk_version (builder.sdkdeps)


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
            f"FROM {self.base_image(config)}",
            *self.apt_layer(ctx.files),
            *self.user_layer(),
            *self.dependency_layers(config, ctx.files, ctx.sdk_release),
            *[f"ARG {name}" for name in ctx.build_arg_names],
            f"COPY --chown=1000:1000 . {APP_DIR}",
            f"EXPOSE {CONTAINER_PORT}",
            f"CMD {json.dumps(self.command_for(config, ctx.files))}",
            *label_lines({"io.spaceport.sdk": self.sdk, **ctx.labels}),
        ]
        return "\n".join(parts) + "\n"

    def base_image(self, config: SpaceConfig) -> str:
        return sdk_base(config.python)

    def environment(self) -> dict[str, str]:
        return {
            **HOSTED_SDK_DEFAULTS,
            **hosted_app_env(APP_DIR),
            "HOME": "/home/user",
            "SYSTEM": "spaces",
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

    def dependency_layers(self, config: SpaceConfig, files: RepoFiles, release: datetime | None = None) -> list[str]:
        return render_plan(install_plan(config, files.paths, release))

    @abstractmethod
    def command(self, config: SpaceConfig) -> list[str]:
        """The container CMD."""

    def command_for(self, config: SpaceConfig, files: RepoFiles) -> list[str]:
        """The container CMD for a repository with these files (default: `command`)."""
        return self.command(config)


def render_plan(plan: InstallPlan) -> list[str]:
    """Dockerfile lines for an install plan: notes + constraints file, then COPY/RUN per step."""
    if not plan.steps:
        return []
    setup = [f"echo {shlex.quote('spaceport: ' + note)}" for note in plan.notes]
    setup.append(f"mkdir -p {shlex.quote(CONSTRAINTS_FILE.rsplit('/', 1)[0])}")
    setup.append(f"printf '%s\\n' {' '.join(shlex.quote(c) for c in plan.constraints)} > {CONSTRAINTS_FILE}"
                 if plan.constraints else f": > {CONSTRAINTS_FILE}")
    lines = ["RUN " + " \\\n && ".join(setup)]
    for step in plan.steps:
        lines += [f"COPY --chown=1000:1000 {name} {APP_DIR}/{name}" for name in step.files]
        lines.append("RUN " + install_command(step))
    return lines


def install_command(step: InstallStep) -> str:
    """`uv pip install ...`, retried without --exclude-newer (saying so) when the dated resolve fails."""
    constraints = CONSTRAINTS_FILE if step.constraints else None
    dated = "uv pip install " + " ".join(shlex.quote(a) for a in step.uv_args(constraints))
    if not step.exclude_newer:
        return dated
    undated = "uv pip install " + " ".join(shlex.quote(a) for a in step.without_date().uv_args(constraints))
    retry = shlex.quote(f"spaceport: {step.retry_note()}")
    return f"{dated} \\\n || {{ echo {retry} && {undated}; }}"


def label_lines(labels: Mapping[str, str]) -> list[str]:
    if not labels:
        return []
    return ["LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))]
