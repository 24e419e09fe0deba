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


LOCAL_REPOSITORY = "spaceport"
_COMMIT = re.compile(r"^[0-9a-f]{12,64}$")
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = re.compile(rf"^{_HOST}(?::[0-9]{{1,5}})?(?:/{_PATH})*$")


def image_tag(owner: str, name: str, commit_sha: str) -> str:
    """The local tag of a build: spaceport/SLUG:SHA12."""
    return image_ref(owner, name, commit_sha)


def image_ref(owner: str, name: str, commit_sha: str, registry: str = "") -> str:
    """The one image reference a build of (owner, name, commit) is tagged, pushed, stored and run as:
    `spaceport/SLUG:SHA12` without a registry, `REGISTRY/SLUG:SHA12` with SPACEPORT_REGISTRY
    (e.g. registry.local:5000/spaces/alice-demo:abc123def456). The owner's part is only the slug
    ([a-z0-9-]) and the commit's hex prefix, so no name can reach outside the registry's prefix."""
    if not _COMMIT.match(commit_sha):
        raise ValueError(f"not a commit id: {commit_sha!r}")
    prefix = registry_prefix(registry) if registry else LOCAL_REPOSITORY
    return f"{prefix}/{base_slug(owner, name)}:{commit_sha[:12]}"


def registry_prefix(registry: str) -> str:
    """SPACEPORT_REGISTRY checked: HOST[:PORT][/PATH], no scheme, no trailing '/', lowercase path."""
    value = registry.strip().rstrip("/")
    if not _REGISTRY.match(value):
        raise ValueError(f"SPACEPORT_REGISTRY={registry!r} is not a registry address: use HOST[:PORT][/PATH] "
                         "without a scheme (lowercase path), e.g. registry.local:5000/spaces")
    host = registry_host(value)
    if not (host == "localhost" or "." in host or ":" in host):
        raise ValueError(f"SPACEPORT_REGISTRY={registry!r}: {host!r} is not a registry host (Docker would read it as "
                         "a Docker Hub namespace); write HOST:PORT or a dotted name, e.g. registry.local:5000/spaces")
    return value


def registry_host(ref: str) -> str:
    """The registry part of an image reference or SPACEPORT_REGISTRY: everything before the first '/'."""
    return ref.split("/", 1)[0]


def in_registry(ref: str, registry: str) -> bool:
    """Whether `ref` lives under SPACEPORT_REGISTRY (and so may be pulled from, or deleted in, it)."""
    if not registry:
        return False
    return ref.startswith(registry_prefix(registry) + "/")
