"""The Runtime contract (JupyterHub Spawner style) and the types it speaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from builder.artifact import Artifact


@dataclass(frozen=True)
class Accelerators:
    """Devices assigned to an instance: type (nvidia-t4, nvidia-a10g, ascend-910b) and device ids."""

    type: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class HardwareSpec:
    flavor: str = "cpu-basic"
    cpu: float = 2.0
    memory_mb: int = 16384
    pids: int = 512
    disk_mb: int = 2048
    accelerators: Accelerators | None = None


@dataclass(frozen=True)
class Mount:
    """A host directory the app sees at `target` (controller.services.volumes): the space's persistent
    storage (read-write, `claim` names it on Kubernetes, `size_bytes` is its tier) or a space's files."""

    source: str  # absolute host path
    target: str  # absolute path inside the app's filesystem (checked by controller.domain.volumes)
    read_only: bool = True
    claim: str = ""  # persistent storage: its stable name (PersistentVolumeClaim on Kubernetes)
    size_bytes: int = 0


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a runtime needs to start one instance of a space."""

    name: str  # deterministic: instance_name(space_id, build_id)
    space_id: str  # "owner/name"
    artifact: Artifact
    env: dict[str, str] = field(default_factory=dict)
    hardware: HardwareSpec = field(default_factory=HardwareSpec)
    labels: dict[str, str] = field(default_factory=dict)
    secret_keys: frozenset[str] = frozenset()  # which env names hold secrets (masked in logs on disk)
    mounts: tuple[Mount, ...] = ()  # persistent storage at /data and read-only volumes


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class State(StrEnum):
    RUNNING = "running"
    FROZEN = "frozen"
    EXITED = "exited"
    MISSING = "missing"


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    state: State
    exit_code: int | None = None
    endpoint: Endpoint | None = None
    labels: dict[str, str] = field(default_factory=dict)
    message: str = ""


class RuntimeFailure(Exception):
    """A runtime could not do what was asked; the message says why."""


class AppExited(RuntimeFailure):
    """The app exited while it was being started (before the runtime could give an endpoint): a crash,
    restarted with backoff like any other, not a failure of the runtime."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Runtime(Protocol):
    name: str

    async def start(self, spec: InstanceSpec) -> Endpoint: ...

    async def stop(self, name: str) -> None: ...

    async def status(self, name: str) -> InstanceStatus: ...

    async def list(self) -> list[InstanceStatus]: ...

    def logs(self, name: str, follow: bool) -> AsyncIterator[str]: ...

    async def freeze(self, name: str) -> None: ...

    async def thaw(self, name: str) -> None: ...

    async def remove(self, name: str) -> None: ...
