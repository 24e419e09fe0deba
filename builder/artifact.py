"""Artifacts: what a build produces and a runtime starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VenvArtifact:
    """A uv-made venv (shared by dependency hash) plus the commit's source snapshot.

    command tokens may hold "{port}" and "{host}": the local runtime replaces them with the port and
    bind address it chose (the values it also puts in PORT, GRADIO_SERVER_*, STREAMLIT_SERVER_*).
    """

    venv: Path
    source: Path
    command: tuple[str, ...]
    port: int
    env: tuple[tuple[str, str], ...] = ()
    health_path: str = "/"

    @property
    def ref(self) -> str:
        return f"venv:{self.venv}::{self.source}"


@dataclass(frozen=True)
class ImageArtifact:
    """A container image built with the docker SDK, tagged spaceport/OWNER-NAME:SHA12."""

    image: str
    port: int
    env: tuple[tuple[str, str], ...] = ()
    health_path: str = "/"

    @property
    def ref(self) -> str:
        return self.image


Artifact = VenvArtifact | ImageArtifact


def artifact_to_dict(artifact: Artifact) -> dict[str, object]:
    """Plain JSON-able form, stored on the Build row."""
    if isinstance(artifact, VenvArtifact):
        return {
            "kind": "venv",
            "venv": str(artifact.venv),
            "source": str(artifact.source),
            "command": list(artifact.command),
            "port": artifact.port,
            "env": [list(pair) for pair in artifact.env],
            "health_path": artifact.health_path,
        }
    return {
        "kind": "image",
        "image": artifact.image,
        "port": artifact.port,
        "env": [list(pair) for pair in artifact.env],
        "health_path": artifact.health_path,
    }


def artifact_from_dict(data: dict[str, object]) -> Artifact:
    env = tuple((str(k), str(v)) for k, v in data.get("env", []))  # type: ignore[misc, attr-defined]
    port = int(data["port"])  # type: ignore[call-overload]
    health = str(data.get("health_path", "/"))
    if data["kind"] == "venv":
        return VenvArtifact(
            venv=Path(str(data["venv"])),
            source=Path(str(data["source"])),
            command=tuple(str(c) for c in data["command"]),  # type: ignore[attr-defined]
            port=port,
            env=env,
            health_path=health,
        )
    return ImageArtifact(image=str(data["image"]), port=port, env=env, health_path=health)
