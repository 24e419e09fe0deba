"""Who may read or write a space's repository over git and Git LFS: one rule for both.

Reading needs the space to exist and be visible to the caller; a private space you may not see answers
exactly like a missing one (no existence oracle). Writing needs a write token of someone who may write the
space, or, for a space that does not exist yet, its namespace (the first push creates it, once it succeeds).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from controller.db.models import Space
from controller.domain.errors import Forbidden, NotFound, SpaceportError, Unauthorized
from controller.services import spaces
from controller.services.accounts import Principal
from controller.services.platform import Platform


def hidden(owner: str, name: str, principal: Principal | None) -> SpaceportError:
    """One answer for "missing" and "private and not yours", so git reveals nothing about private spaces."""
    if principal is None:
        return Unauthorized(f"Authenticate with USER:TOKEN to read {owner}/{name} "
                            "(it may be private, or may not exist).")
    return NotFound(f"Space {owner}/{name} does not exist, or you may not see it.")


def check_read(session: Session, principal: Principal | None, owner: str, name: str) -> Space:
    space = spaces.find_space(session, owner, name)
    if space is None or not spaces.can_read(session, principal, space):
        raise hidden(owner, name, principal)
    return space


def check_write(session: Session, platform: Platform, principal: Principal | None, owner: str,
                name: str) -> Space | None:
    """The space the principal may push to, or None when it does not exist yet and its namespace is writable."""
    if principal is None:
        raise Unauthorized("Pushing needs a write token: git push http://USER:TOKEN@HOST/spaces/OWNER/NAME")
    if not principal.can_write:
        raise Forbidden("This token is read-only; pushing needs a token with write scope.")
    spaces.check_code_push(platform, principal)
    space = spaces.find_space(session, owner, name)
    if space is None or not spaces.can_read(session, principal, space):
        spaces.check_namespace_writable(session, principal, owner)
    if space is not None and not spaces.can_write(session, principal, space):
        raise Forbidden(f"You may not push to {owner}/{name}: only its owner or its organization's members can.")
    return space
