"""Persistent storage and volumes of a space (issue 16): tiers, the volume list an owner sends, mount paths.

Two things an app can see besides its code, as on the hosted platform:
* persistent storage (`HfApi.request_space_storage`): one read-write directory at /data that outlives
  restarts, rebuilds, sleep and controller restarts, of a tier (small, medium, large) whose size is its limit;
* volumes (`HfApi.set_space_volumes`): read-only mounts of a repo. Spaceport hosts spaces only, so a volume
  is `type: space` (that space's files at a revision); models, datasets and buckets are refused saying so.

Everything here is pure: the list comes from the owner's request body and is untrusted, so every field is
checked and a mount path can only name a fresh directory of the app's filesystem, never a system one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.domain.errors import BadRequest
from controller.domain.naming import validate_name
from controller.domain.units import format_bytes

TIERS = ("small", "medium", "large")
DEFAULT_TIER_BYTES: Mapping[str, int] = {"small": 20 * 10**9, "medium": 150 * 10**9, "large": 10**12}
STORAGE_PATH = "/data"
VOLUME_TYPES = ("bucket", "model", "dataset", "space")
MAX_VOLUMES = 8
MAX_PATH = 200
# Top-level directories a volume may not take: the system's, the app's home and code, /tmp, /data's parent.
RESERVED_TOP = frozenset({"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "opt", "proc",
                          "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var", "app", "nix", "snap"})
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,99}$")
_KEYS = frozenset({"type", "source", "mountPath", "mount_path", "revision", "readOnly", "read_only", "path"})
SUPPORTED = ("Spaceport mounts volumes of type 'space' (another space's files, read-only) and offers "
             "persistent storage at /data (request_space_storage)")


@dataclass(frozen=True)
class VolumeSpec:
    """One checked volume: a space's files (`source` = OWNER/NAME) at `revision`, read-only at `mount_path`."""

    type: str
    source: str
    mount_path: str
    revision: str = "main"
    path: str = ""  # a folder inside the repo to mount instead of its root

    def to_json(self) -> dict[str, Any]:
        """The Hub's shape (huggingface_hub's Volume reads camelCase)."""
        body: dict[str, Any] = {"type": self.type, "source": self.source, "mountPath": self.mount_path,
                                "revision": self.revision, "readOnly": True}
        if self.path:
            body["path"] = self.path
        return body


def parse_tier(value: object, sizes: Mapping[str, int]) -> str:
    """'small' | 'medium' | 'large', offered on this site (its size is not 0)."""
    if not isinstance(value, str) or value not in TIERS:
        raise BadRequest(f"Unknown storage tier {value!r}: send {{\"tier\": \"small\"}}, \"medium\" or \"large\".")
    if sizes.get(value, 0) <= 0:
        offered = [t for t in TIERS if sizes.get(t, 0) > 0]
        raise BadRequest(f"The {value} storage tier is not offered on this site; offered: "
                         f"{', '.join(offered) or 'none (an admin sets SPACEPORT_STORAGE_SMALL_BYTES, _MEDIUM_ or _LARGE_)'}.")
    return value


def check_tier_change(current: str | None, wanted: str, sizes: Mapping[str, int]) -> None:
    """Storage can grow, never shrink in place (as on the hosted platform): data could be lost."""
    if current is not None and TIERS.index(wanted) < TIERS.index(current):
        raise BadRequest(f"The space has {current} persistent storage ({format_bytes(sizes[current])}); it cannot "
                         f"be decreased to {wanted}. Delete it (delete_space_storage, which deletes its data) and "
                         f"request {wanted} again.")


def describe_storage(tier: str, sizes: Mapping[str, int]) -> str:
    return f"{tier} persistent storage ({format_bytes(sizes.get(tier, 0))} at {STORAGE_PATH})"


def check_mount_path(value: object) -> str:
    """An absolute, normalized path of plain names, not a system directory: `/models`, `/mnt/weights`."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise BadRequest(f"mountPath {value!r} must be an absolute path such as /models.")
    if len(value) > MAX_PATH:
        raise BadRequest(f"mountPath is longer than {MAX_PATH} characters.")
    segments = value[1:].split("/")
    for segment in segments:
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise BadRequest(f"mountPath {value!r} is not allowed: use names of letters, digits, '.', '_' and '-' "
                             "separated by single '/', without '.' or '..' (for example /models/weights).")
    if segments[0] in RESERVED_TOP:
        raise BadRequest(f"mountPath {value!r} is inside /{segments[0]}, which belongs to the system or the app; "
                         f"mount at another top-level directory such as /models or /mnt/{segments[-1]}.")
    return value


def _inside(path: str, other: str) -> bool:
    return path == other or path.startswith(other.rstrip("/") + "/")


def check_no_overlap(paths: list[str]) -> None:
    for i, path in enumerate(paths):
        for other in paths[i + 1:]:
            if _inside(path, other) or _inside(other, path):
                raise BadRequest(f"Volumes at {path} and {other} overlap: give each its own directory.")


def _field(item: Mapping[str, Any], camel: str, snake: str) -> Any:
    return item[camel] if camel in item else item.get(snake)


def _subpath(value: object) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise BadRequest("A volume's path must be a folder of the repo, such as 'models/small'.")
    segments = value.strip("/").split("/")
    if len(value) > MAX_PATH or any(s in ("", ".", "..") or not _SEGMENT.match(s) for s in segments):
        raise BadRequest(f"A volume's path {value!r} must be a folder inside the repo without '.' or '..'.")
    return "/".join(segments)


def parse_volume(item: object) -> VolumeSpec:
    if not isinstance(item, dict):
        raise BadRequest("Each volume is an object {type, source, mountPath, revision?, readOnly?, path?}.")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise BadRequest(f"Unknown volume field(s) {', '.join(map(repr, unknown))}; known: type, source, mountPath, "
                         "revision, readOnly, path.")
    kind = item.get("type")
    if kind not in VOLUME_TYPES:
        raise BadRequest(f"Unknown volume type {kind!r}: one of {', '.join(VOLUME_TYPES)}. {SUPPORTED}.")
    if kind != "space":
        raise BadRequest(f"Volumes of type {kind!r} are not supported: Spaceport hosts no {kind}s. {SUPPORTED}.")
    source = item.get("source")
    if not isinstance(source, str):
        raise BadRequest(f"A volume's source {source!r} must be a space id OWNER/NAME.")
    owner, _, name = source.partition("/")
    if not owner or not name:
        raise BadRequest(f"A volume's source {source!r} must be a space id OWNER/NAME.")
    validate_name(owner, "volume source owner")
    validate_name(name, "volume source space name")
    if _field(item, "readOnly", "read_only") is False:
        raise BadRequest(f"Volume {source}: a repo is always mounted read-only (readOnly: false is refused); "
                         "for a writable directory use persistent storage at /data (request_space_storage).")
    revision = item.get("revision") or "main"
    if not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision:
        raise BadRequest(f"Volume {source}: revision {revision!r} must be a branch, tag or commit sha.")
    return VolumeSpec(type=kind, source=source, mount_path=check_mount_path(_field(item, "mountPath", "mount_path")),
                      revision=revision, path=_subpath(item.get("path")))


def parse_volumes(body: object) -> list[VolumeSpec]:
    """The body of PUT /api/spaces/O/N/volumes: {"volumes": [...]} (at most MAX_VOLUMES, no overlaps)."""
    items = body.get("volumes") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest('Send {"volumes": [{"type": "space", "source": "OWNER/NAME", "mountPath": "/models"}]}.')
    if len(items) > MAX_VOLUMES:
        raise BadRequest(f"At most {MAX_VOLUMES} volumes per space; {len(items)} were sent.")
    volumes = [parse_volume(item) for item in items]
    check_no_overlap([v.mount_path for v in volumes])
    return volumes


def check_storage_path(volumes: list[VolumeSpec], has_storage: bool) -> None:
    """/data belongs to persistent storage when the space has it."""
    if has_storage:
        for volume in volumes:
            if _inside(volume.mount_path, STORAGE_PATH) or _inside(STORAGE_PATH, volume.mount_path):
                raise BadRequest(f"Volume {volume.source} at {volume.mount_path}: {STORAGE_PATH} holds this space's "
                                 "persistent storage; mount the volume elsewhere, such as /models.")


def volumes_from_json(rows: object) -> list[VolumeSpec]:
    """What the database stores (written by to_json after parse_volumes; re-checked all the same)."""
    return [parse_volume(row) for row in rows] if isinstance(rows, list) else []
