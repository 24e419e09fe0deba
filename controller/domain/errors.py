"""User-facing errors: typed, mapped to HTTP codes, with messages that say what to fix."""

from __future__ import annotations


class SpaceportError(Exception):
    status: int = 400
    code: str = "bad_request"
    hf_code: str | None = None  # X-Error-Code the huggingface_hub client maps to its own exceptions

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra  # more fields for the JSON body (e.g. "url" of an existing repo)


class BadRequest(SpaceportError):
    status, code = 400, "bad_request"


class InvalidName(BadRequest):
    code = "invalid_name"


class Unauthorized(SpaceportError):
    status, code = 401, "unauthorized"


class Forbidden(SpaceportError):
    status, code = 403, "forbidden"


class NotFound(SpaceportError):
    status, code = 404, "not_found"


class RepoNotFound(SpaceportError):
    status, code, hf_code = 404, "not_found", "RepoNotFound"


class Conflict(SpaceportError):
    status, code = 409, "conflict"


class NotImplementedHere(SpaceportError):
    status, code = 501, "not_implemented"


class QuotaExceeded(Forbidden):
    code = "quota_exceeded"


class CapacityExhausted(Conflict):
    code = "capacity_exhausted"
