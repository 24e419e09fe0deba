"""Push a built image to the site's registry (SPACEPORT_REGISTRY) with the Docker engine that built it.

The reference comes from the caller (controller/domain/naming.image_ref): REGISTRY/SLUG:SHA12. The
push's progress goes to the build log in a few lines (start, at most one progress line every
PROGRESS_EVERY seconds, the result), never one line per layer chunk. A failed push is a BUILD_ERROR that
names the registry, the engine's answer and what to fix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests

from builder.errors import BUILD_ERROR, BuildCancelled, BuildFailure

PROGRESS_EVERY = 10.0  # seconds between progress lines of a long push
Log = Callable[[str], None]


def split_ref(ref: str) -> tuple[str, str]:
    """'host:5000/spaces/x:tag' -> ('host:5000/spaces/x', 'tag'); a port is not a tag."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repository, tag


def registry_of(ref: str) -> str:
    return ref.split("/", 1)[0]


def registry_hint(error: str) -> str:
    """What to fix, from the engine's or the registry's error text."""
    text = error.lower()
    if "server gave http response to https client" in text:
        return ("the registry serves plain HTTP: list it in the Docker engine's insecure-registries "
                "(/etc/docker/daemon.json) or give it a TLS certificate")
    if any(word in text for word in ("denied", "unauthorized", "authentication required", "forbidden")):
        return "give the engine push/pull rights: `docker login` to the registry on that engine, or fix the registry's access rules"
    if any(word in text for word in ("connection refused", "no such host", "timeout", "i/o timeout", "no route",
                                     "dial tcp", "connect:", "name resolution", "network is unreachable")):
        return "check SPACEPORT_REGISTRY and that the registry is running and reachable from the Docker engine"
    if "certificate" in text or "x509" in text:
        return "the engine does not trust the registry's certificate: add its CA to the engine (/etc/docker/certs.d/HOST/ca.crt)"
    return "check the registry's log and SPACEPORT_REGISTRY"


@dataclass
class _Progress:
    """Bytes sent per layer, from the engine's progressDetail; layers done or already present."""

    sent: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    pushed: set[str] = field(default_factory=set)
    existing: set[str] = field(default_factory=set)
    digest: str = ""

    def add(self, chunk: dict[str, Any]) -> None:
        layer, status = str(chunk.get("id", "")), str(chunk.get("status", ""))
        detail = chunk.get("progressDetail") or {}
        if status == "Pushing" and layer and detail.get("total"):
            self.sent[layer] = int(detail.get("current", 0))
            self.total[layer] = int(detail["total"])
        elif status == "Pushed" and layer:
            self.pushed.add(layer)
        elif status == "Layer already exists" and layer:
            self.existing.add(layer)
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            self.digest = str(aux["Digest"])

    def line(self) -> str:
        mib = sum(self.sent.values()) / 1048576
        of = sum(self.total.values()) / 1048576
        return f"pushing: {mib:.1f} of {of:.1f} MiB sent, {len(self.pushed)} layers done"


def push_image(client: Any, ref: str, *, log: Log, cancel: threading.Event | None = None,
               clock: Callable[[], float] = time.monotonic) -> str:
    """Push `ref` (already tagged on the engine of `client`, a docker.DockerClient); return its digest."""
    registry = registry_of(ref)
    repository, tag = split_ref(ref)
    log(f"pushing image {ref} to the registry {registry}")
    started = last = clock()
    progress = _Progress()
    try:
        stream: Iterator[dict[str, Any]] = client.images.push(repository, tag=tag, stream=True, decode=True)
        for chunk in stream:
            if cancel is not None and cancel.is_set():
                raise BuildCancelled()
            if chunk.get("error") or chunk.get("errorDetail"):
                error = str(chunk.get("error") or (chunk.get("errorDetail") or {}).get("message", ""))
                raise _failure(ref, registry, error.strip())
            progress.add(chunk)
            if clock() - last >= PROGRESS_EVERY:
                last = clock()
                log(progress.line())
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise _failure(ref, registry, str(getattr(exc, "explanation", None) or exc)) from None
    if not progress.digest:
        raise _failure(ref, registry, "the engine reported no digest for the pushed image")
    log(f"pushed {ref} ({len(progress.pushed)} layers sent, {len(progress.existing)} already in the registry) "
        f"in {clock() - started:.1f} s, digest {progress.digest}")
    return progress.digest


def _failure(ref: str, registry: str, error: str) -> BuildFailure:
    return BuildFailure(BUILD_ERROR, f"the image was built but pushing {ref} to the registry {registry} failed: "
                                     f"{error}. The site's admin must fix it ({registry_hint(error)}); then push again or "
                                     "factory-rebuild.")
