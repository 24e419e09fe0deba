"""Users, organizations, memberships, tokens and authentication."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import Account, Membership, Token, utcnow
from controller.domain.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from controller.domain.naming import validate_name

TOKEN_PREFIX = "sp_"
SCOPES = ("read", "write")


@dataclass(frozen=True)
class Principal:
    """Who is calling, and with which scope."""

    user: Account
    # "write" | "read" | "identity": an app's OAuth token granted neither read-repos nor a write scope says
    # who its user is (whoami, userinfo) and nothing more: it sees what anonymous visitors see.
    scope: str
    token_name: str | None = None

    @property
    def can_write(self) -> bool:
        return self.scope == "write"

    @property
    def can_read_private(self) -> bool:
        """May this principal read what its user may read beyond the public (private spaces, admin pages)?"""
        return self.scope in ("read", "write")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_hex, digest_hex = stored.split("$")
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=2**14, r=8, p=1)
    return hmac.compare_digest(digest.hex(), digest_hex)


def get_account(session: Session, name: str) -> Account | None:
    return session.scalar(select(Account).where(Account.name == name))


def require_account(session: Session, name: str) -> Account:
    account = get_account(session, name)
    if account is None:
        raise NotFound(f"No user or organization named {name!r}.")
    return account


def _new_account(session: Session, name: str, kind: str) -> Account:
    validate_name(name, "user name" if kind == "user" else "organization name")
    if get_account(session, name) is not None:
        raise Conflict(f"The name {name!r} is already taken by a user or organization.")
    account = Account(name=name, kind=kind)
    session.add(account)
    session.flush()
    return account


def create_user(session: Session, name: str, *, password: str | None = None, admin: bool = False,
                email: str | None = None) -> Account:
    if password is not None and len(password) < 8:
        raise BadRequest("Passwords need at least 8 characters.")
    user = _new_account(session, name, "user")
    user.is_admin = admin
    user.email = email
    user.password_hash = hash_password(password) if password else None
    return user


def set_password(user: Account, password: str) -> None:
    if len(password) < 8:
        raise BadRequest("Passwords need at least 8 characters.")
    user.password_hash = hash_password(password)


def create_org(session: Session, name: str, members: list[str]) -> Account:
    org = _new_account(session, name, "org")
    for member in members:
        add_member(session, org, require_account(session, member))
    return org


def add_member(session: Session, org: Account, user: Account, role: str = "write") -> None:
    if org.kind != "org" or user.kind != "user":
        raise BadRequest("Only users can be members, and only of organizations.")
    exists = session.scalar(select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id))
    if exists is None:
        session.add(Membership(org_id=org.id, user_id=user.id, role=role))
        session.flush()


def orgs_of(session: Session, user: Account) -> list[Account]:
    stmt = select(Account).join(Membership, Membership.org_id == Account.id).where(Membership.user_id == user.id)
    return list(session.scalars(stmt.order_by(Account.name)))


def is_member(session: Session, user: Account, org: Account) -> bool:
    stmt = select(Membership.id).where(Membership.org_id == org.id, Membership.user_id == user.id)
    return session.scalar(stmt) is not None


def create_token(session: Session, user: Account, name: str = "default", scope: str = "write") -> str:
    """Create a token and return it in clear, once; only its hash is stored."""
    if scope not in SCOPES:
        raise BadRequest(f"Token scope must be one of {', '.join(SCOPES)}, got {scope!r}.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(user_id=user.id, name=name[:100] or "default", token_hash=hash_token(token),
                      prefix=token[:8], scope=scope))
    session.flush()
    return token


def list_tokens(session: Session, user: Account) -> list[Token]:
    stmt = select(Token).where(Token.user_id == user.id, Token.revoked.is_(False)).order_by(Token.id)
    return list(session.scalars(stmt))


def revoke_token(session: Session, user: Account, token_id: int) -> None:
    token = session.get(Token, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound("No such token.")
    token.revoked = True


def authenticate_token(session: Session, token: str) -> Principal:
    """Bearer/basic token -> Principal, or Unauthorized."""
    if token.startswith("sp_oauth_"):  # an app's OAuth access token (services/oauth.py ACCESS_TOKEN_PREFIX)
        from controller.services import oauth

        return oauth.authenticate_access_token(session, token)
    row = session.scalar(select(Token).where(Token.token_hash == hash_token(token)))
    if row is None or row.revoked:
        raise Unauthorized("Invalid or revoked token. Create one with `spaceport tokens create USER`.")
    row.last_used_at = utcnow()
    return Principal(user=row.user, scope=row.scope, token_name=row.name)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def authenticate_password(session: Session, name: str, password: str) -> Account:
    """The same work (one scrypt) whether the user exists, has no password, or not: no timing oracle."""
    user = get_account(session, name)
    stored = user.password_hash if user is not None and user.kind == "user" else None
    matched = check_password(password, stored or _dummy_hash())
    if user is None or stored is None or not matched:
        raise Unauthorized("Wrong user name or password.")
    return user


def may_write_namespace(session: Session, principal: Principal | None, owner: Account) -> bool:
    """May this principal create/push/change things in owner's namespace?"""
    if principal is None or not principal.can_write:
        return False
    user = principal.user
    if user.is_admin or user.id == owner.id:
        return True
    return owner.kind == "org" and is_member(session, user, owner)


def may_read_namespace_private(session: Session, principal: Principal | None, owner: Account) -> bool:
    if principal is None or not principal.can_read_private:
        return False
    user = principal.user
    if user.is_admin or user.id == owner.id:
        return True
    return owner.kind == "org" and is_member(session, user, owner)


def require_admin(principal: Principal | None, *, write: bool = False) -> Account:
    """The caller, if an admin; `write` for changes, which a read-scoped token may not make."""
    if principal is None:
        raise Unauthorized("Log in or pass an admin token.")
    if not principal.user.is_admin:
        raise Forbidden("Only Spaceport admins may do this.")
    if not principal.can_read_private:
        raise Forbidden("This is an app's sign-in token: it only says who you are. Use your own token.")
    if write and not principal.can_write:
        raise Forbidden("This token is read-only: admin changes need a write token "
                        "(`spaceport tokens create USER --scope write`).")
    return principal.user


def token_from_header(header: str | None) -> str | None:
    """Bearer TOKEN, or Basic base64(USER:TOKEN) as git sends it."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip()).decode()
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("Malformed Basic authorization header.") from None
        _, _, secret = decoded.partition(":")
        return secret or None
    return None
