"""Names of accounts and spaces, URL slugs and instance names. Pure."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from controller.domain.errors import InvalidName

NAME_MAX = 96
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
RESERVED = frozenset(
    {
        "api", "apps", "spaces", "static", "admin", "login", "logout", "new", "settings", "tokens",
        "users", "orgs", "organizations", "git", "assets", "healthz", "docs", "openapi.json", "redoc",
        "me", "hf", "models", "datasets", "join", "signup", "spaceport",
    }
)
ALLOWED = "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 96 characters, no '..'"


def validate_name(name: str, what: str = "name") -> str:
    """Return the name unchanged if it is allowed, else raise InvalidName saying what is allowed."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"The {what} is empty. Allowed: {ALLOWED}.")
    if unicodedata.normalize("NFKC", name) != name or not name.isascii():
        raise InvalidName(f"The {what} {name!r} contains non-ASCII characters. Allowed: {ALLOWED}.")
    if len(name) > NAME_MAX:
        raise InvalidName(f"The {what} {name!r} is longer than {NAME_MAX} characters.")
    if ".." in name or not _NAME.match(name):
        raise InvalidName(f"The {what} {name!r} is not allowed. Allowed: {ALLOWED}.")
    if name.lower().endswith(".git"):
        raise InvalidName(f"The {what} {name!r} may not end with '.git'.")
    if name.lower() in RESERVED:
        raise InvalidName(f"The {what} {name!r} is reserved. Choose another.")
    return name


def split_repo_id(repo_id: str) -> tuple[str, str]:
    """'owner/name' -> (owner, name), both validated."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise InvalidName(f"A space id is 'OWNER/NAME', got {repo_id!r}.")
    return validate_name(parts[0], "owner"), validate_name(parts[1], "space name")


def base_slug(owner: str, name: str) -> str:
    """DNS label for host-based URLs: lowercase, [a-z0-9-], at most 63 characters."""
    raw = f"{owner}-{name}".lower()
    slug = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if len(slug) > 63:
        slug = slug[:54].rstrip("-")
    return slug or "space"


def unique_slug(owner: str, name: str, taken: bool) -> str:
    """The slug; when the plain one is taken (owner/name with '-' can collide), add a short hash."""
    slug = base_slug(owner, name)
    if not taken:
        return slug
    digest = hashlib.sha256(f"{owner}/{name}".encode()).hexdigest()[:8]
    return f"{slug[:54].rstrip('-')}-{digest}"


def instance_name(owner: str, name: str, build_id: int, generation: int) -> str:
    """Deterministic instance name: the same build and generation of a space always has the same name."""
    return f"sp-{base_slug(owner, name)[:40]}-{build_id}-{generation}"


def image_tag(owner: str, name: str, commit_sha: str) -> str:
    return f"spaceport/{base_slug(owner, name)}:{commit_sha[:12]}"
