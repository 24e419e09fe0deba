"""The Git LFS batch API (https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md) for space repos.

`git lfs` and `huggingface_hub` ask POST <remote>.git/info/lfs/objects/batch what to do with a list of
objects (sha256 oid + size). Access is git's (controller.git.access): download needs read access, upload
write access. The answer's actions are links back to this server, signed (HMAC with the platform key) for
one space, oid, size and operation and valid for SPACEPORT_LFS_ACTION_SECONDS: huggingface_hub PUTs to
the upload link with no credentials at all (the hosted Hub hands out pre-signed storage URLs).

Objects live per owner, content-addressed (controller.git.lfs). A space only hands out objects its own git
history points to (a canonical pointer blob for that oid and size is in its repo), so knowing an object's
hash is not enough to read it through a public space of the same owner. Uploads are streamed to a temp
file while hashed, refused unless size and sha256 match the declared ones, and counted against the
owner's storage limit before any byte is read and again before the object is published.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from sqlalchemy.orm import Session

from controller.domain.errors import BadRequest, Forbidden, NotFound, SpaceportError
from controller.domain.lfs import Pointer, valid_oid
from controller.domain.units import format_bytes
from controller.git import access, quota, storage
from controller.git.lfs import ObjectStore, repo_has_pointer
from controller.services.accounts import Principal
from controller.services.platform import Platform

OPERATIONS = ("upload", "download")
MAX_OBJECTS = 1000  # per batch request


class LfsError(SpaceportError):
    """A batch-level failure git-lfs shows with its message (507: it says "Disk Space Limit Exceeded")."""


class InsufficientStorage(LfsError):
    status, code = 507, "storage_limit_exceeded"


class UploadRejected(BadRequest):
    code = "lfs_upload_rejected"


@dataclass(frozen=True)
class Target:
    owner: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.owner}/{self.name}"

    def repo(self, platform: Platform) -> Path:
        return storage.repo_path(platform.settings.repos_dir, self.owner, self.name)

    def store(self, platform: Platform) -> ObjectStore:
        return ObjectStore.of_repo(self.repo(platform))


# ----------------------------------------------------------------------------- signed action links


def _signature(platform: Platform, op: str, target: Target, pointer: Pointer, expires: int) -> str:
    key = hmac.new(platform.settings.key.encode(), b"spaceport git-lfs actions", hashlib.sha256).digest()
    message = f"{op}\n{target.path}\n{pointer.oid}\n{pointer.size}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def action(platform: Platform, base: str, op: str, target: Target, pointer: Pointer) -> dict[str, object]:
    """One action of a batch answer: a link signed for this operation, space, oid and size."""
    seconds = platform.settings.lfs_action_seconds
    expires = int(time.time()) + seconds
    query = urlencode({"size": pointer.size, "expires": expires, "sig": _signature(platform, op, target, pointer, expires)})
    tail = "verify" if op == "verify" else f"objects/{pointer.oid}"
    href = f"{base}/spaces/{quote(target.owner)}/{quote(target.name)}.git/info/lfs/{tail}?{query}"
    if op == "verify":
        href += f"&oid={pointer.oid}"
    return {"href": href, "expires_in": seconds}


def check_signature(platform: Platform, op: str, target: Target, oid: str, size: str, expires: str, sig: str) -> Pointer:
    """The pointer a signed link is for, or Forbidden (expired, altered, or for another space/object)."""
    if not valid_oid(oid) or not size.isdigit() or not expires.isdigit():
        raise Forbidden("This Git LFS link is malformed: ask the batch API (git lfs push / fetch) for a new one.")
    pointer = Pointer(oid, int(size))
    if int(expires) < time.time():
        raise Forbidden("This Git LFS link has expired: ask the batch API (git lfs push / fetch) for a new one.")
    if not hmac.compare_digest(_signature(platform, op, target, pointer, int(expires)), sig):
        raise Forbidden("This Git LFS link's signature does not match: it was altered or is for another object.")
    return pointer


# ----------------------------------------------------------------------------- the batch call


@dataclass(frozen=True)
class BatchRequest:
    operation: str
    objects: list[dict[str, object]]


def parse_batch(body: object) -> BatchRequest:
    if not isinstance(body, dict):
        raise BadRequest("The batch body must be a JSON object with 'operation' and 'objects'.")
    operation, objects = body.get("operation"), body.get("objects")
    if operation not in OPERATIONS:
        raise BadRequest("The batch 'operation' must be 'upload' or 'download'.")
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise BadRequest("The batch 'objects' must be a list of {'oid': ..., 'size': ...}.")
    if len(objects) > MAX_OBJECTS:
        raise BadRequest(f"A batch asks for at most {MAX_OBJECTS} objects; split the request.")
    if body.get("hash_algo", "sha256") != "sha256":
        raise LfsBadHash("Spaceport stores Git LFS objects by sha256 only (hash_algo 'sha256').")
    return BatchRequest(str(operation), objects)


class LfsBadHash(LfsError):
    status, code = 409, "unsupported_hash_algo"


def authorize(session: Session, platform: Platform, principal: Principal | None, target: Target, operation: str) -> None:
    if operation == "upload":
        access.check_write(session, platform, principal, target.owner, target.name)
    else:
        access.check_read(session, principal, target.owner, target.name)


def batch(platform: Platform, base: str, target: Target, request: BatchRequest) -> dict[str, object]:
    """The batch answer (access already checked): per object, actions or an error."""
    pointers: list[Pointer | None] = [_pointer(o) for o in request.objects]
    if request.operation == "upload":
        entries = _upload_entries(platform, base, target, request.objects, pointers)
    else:
        entries = _download_entries(platform, base, target, request.objects, pointers)
    return {"transfer": "basic", "objects": entries, "hash_algo": "sha256"}


def _pointer(item: dict[str, object]) -> Pointer | None:
    oid, size = item.get("oid"), item.get("size")
    if not valid_oid(oid) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    assert isinstance(oid, str)
    return Pointer(oid, size)


def _invalid(item: dict[str, object], message: str, code: int = 422) -> dict[str, object]:
    size = item.get("size")
    return {"oid": str(item.get("oid")), "size": size if isinstance(size, int) else 0,
            "error": {"code": code, "message": message}}


BAD_OBJECT = "Each object needs 'oid' (64 lowercase hex: the sha256 of the file) and 'size' (bytes, >= 0)."


def _upload_entries(platform: Platform, base: str, target: Target, items: list[dict[str, object]],
                    pointers: list[Pointer | None]) -> list[dict[str, object]]:
    store, largest = target.store(platform), platform.settings.max_lfs_object_bytes
    needed = {p for p in pointers if p is not None and p.size <= largest and not store.has(p)}
    check_room(platform, target, sum(p.size for p in needed), "this Git LFS upload")
    entries = []
    for item, pointer in zip(items, pointers, strict=True):
        if pointer is None:
            entries.append(_invalid(item, BAD_OBJECT))
        elif pointer.size > largest:
            entries.append(_invalid(item, f"{format_bytes(pointer.size)} is larger than one Git LFS object may be "
                                          f"({format_bytes(largest)}, SPACEPORT_MAX_LFS_OBJECT_BYTES)."))
        elif pointer not in needed:  # stored already: no actions, the client skips it
            entries.append({"oid": pointer.oid, "size": pointer.size, "authenticated": True})
        else:
            entries.append({"oid": pointer.oid, "size": pointer.size, "authenticated": True, "actions": {
                "upload": action(platform, base, "upload", target, pointer),
                "verify": action(platform, base, "verify", target, pointer)}})
    return entries


def _download_entries(platform: Platform, base: str, target: Target, items: list[dict[str, object]],
                      pointers: list[Pointer | None]) -> list[dict[str, object]]:
    store = target.store(platform)
    held = repo_has_pointer(target.repo(platform), [p for p in pointers if p is not None])
    entries = []
    for item, pointer in zip(items, pointers, strict=True):
        if pointer is None:
            entries.append(_invalid(item, BAD_OBJECT))
        elif pointer not in held or not store.has(pointer):
            entries.append(_invalid(item, f"Object {pointer.oid} ({pointer.size} bytes) does not exist in "
                                          f"{target.path} (no file of this space points to it).", 404))
        else:
            entries.append({"oid": pointer.oid, "size": pointer.size, "authenticated": True,
                            "actions": {"download": action(platform, base, "download", target, pointer)}})
    return entries


def check_room(platform: Platform, target: Target, adding: int, what: str) -> None:
    try:
        quota.check(quota.StorageLimits.from_settings(platform.settings), target.repo(platform), adding, what)
    except quota.StorageLimitExceeded as exc:
        raise InsufficientStorage(exc.message) from None


# ----------------------------------------------------------------------------- transfers


async def receive(platform: Platform, target: Target, pointer: Pointer, chunks: AsyncIterator[bytes]) -> bool:
    """Store an uploaded object once its bytes hash to the declared oid and size; False if it was stored already.

    Nothing is kept of a refused upload (wrong size or hash, over the storage limit, cut short)."""
    store = target.store(platform)
    if store.has(pointer):
        async for _ in chunks:  # drain: the client sends the body anyway
            pass
        return False
    if pointer.size > platform.settings.max_lfs_object_bytes:
        raise UploadRejected(f"This object is larger than SPACEPORT_MAX_LFS_OBJECT_BYTES "
                             f"({format_bytes(platform.settings.max_lfs_object_bytes)}).")
    check_room(platform, target, pointer.size, "this Git LFS object")
    fd, tmp = store.temp_file()
    try:
        await _write_checked(fd, pointer, chunks)
        limits = quota.StorageLimits.from_settings(platform.settings)
        with quota.owner_lock(limits, target.repo(platform)):
            check_room(platform, target, 0, "this Git LFS object")  # its bytes are in the walk already (lfs/tmp)
            store.publish(tmp, pointer.oid)
    finally:
        tmp.unlink(missing_ok=True)
    return True


async def _write_checked(fd: int, pointer: Pointer, chunks: AsyncIterator[bytes]) -> None:
    digest, received = hashlib.sha256(), 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > pointer.size:
                raise UploadRejected(f"The upload is larger than the declared size ({pointer.size} bytes).")
            digest.update(chunk)
            os.write(fd, chunk)
    finally:
        os.close(fd)
    if received != pointer.size:
        raise UploadRejected(f"The upload has {received} bytes, not the declared {pointer.size}.")
    if digest.hexdigest() != pointer.oid:
        raise UploadRejected(f"The upload's sha256 is {digest.hexdigest()}, not the declared oid {pointer.oid}.")


def verify(platform: Platform, target: Target, pointer: Pointer, body: object) -> None:
    """The verify action: the object the link is for is stored with its size (else NotFound)."""
    if isinstance(body, dict) and (body.get("oid"), body.get("size")) != (pointer.oid, pointer.size):
        raise BadRequest("The verify body names another object than this link is for.")
    if not target.store(platform).has(pointer):
        raise NotFound(f"Object {pointer.oid} ({pointer.size} bytes) was not uploaded (or not completely): upload it again.")


def object_path(platform: Platform, target: Target, pointer: Pointer) -> Path:
    path = target.store(platform).path(pointer.oid)
    if not target.store(platform).has(pointer):
        raise NotFound(f"Object {pointer.oid} is not stored.")
    return path

