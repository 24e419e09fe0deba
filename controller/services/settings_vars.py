"""Space variables (public) and secrets (write-only, encrypted with the platform key).

A change restarts a built space with the new configuration (a generation bump: the new instance
replaces the old once healthy); an unbuilt space just stores it for its first start.
`space_env` gives the reconciler what to inject into the app environment.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from builder.envnames import reserved_reason, without_reserved_names
from controller.db.models import Secret, Space, Variable, utcnow
from controller.domain.errors import BadRequest
from controller.services.platform import Platform

KEY_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
KEY_MAX = 200
VALUE_MAX = 64 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    description: str | None = None


def validate_key(key: object, what: str = "variable") -> str:
    """An environment variable name: uppercase letters, digits and '_', not starting with a digit."""
    if not isinstance(key, str) or not key:
        raise BadRequest(f"The {what} key is missing: pass {{'key': 'NAME', 'value': '...'}}.")
    if len(key) > KEY_MAX or not KEY_PATTERN.match(key):
        raise BadRequest(
            f"Invalid {what} key {key[:KEY_MAX]!r}: use an environment variable name made of uppercase letters, "
            f"digits and '_', not starting with a digit (e.g. MODEL_ID), at most {KEY_MAX} characters."
        )
    why = reserved_reason(key)
    if why is not None:
        raise BadRequest(f"Cannot set {what} {why}")
    return key


def validate_value(value: object, key: str, what: str = "variable") -> str:
    if not isinstance(value, str):
        raise BadRequest(f"The value of {what} {key} must be a string.")
    if len(value) > VALUE_MAX:
        raise BadRequest(f"The value of {what} {key} is longer than {VALUE_MAX} characters.")
    return value


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------- variables


def list_variables(session: Session, space: Space) -> list[Variable]:
    stmt = select(Variable).where(Variable.space_id == space.id).order_by(Variable.key)
    return list(session.scalars(stmt))


def variables_json(session: Session, space: Space) -> dict[str, dict[str, str | None]]:
    """{KEY: {value, description, updatedAt}} as `HfApi.get_space_variables` parses it."""
    return {
        v.key: {"value": v.value, "description": v.description, "updatedAt": _iso(v.updated_at)}
        for v in list_variables(session, space)
    }


def put_variable(session: Session, space: Space, item: KeyValue) -> Variable:
    """Insert or update one variable (no restart: callers batch changes, then call `config_changed`)."""
    key = validate_key(item.key)
    value = validate_value(item.value, key)
    row = session.scalar(select(Variable).where(Variable.space_id == space.id, Variable.key == key))
    if row is None:
        row = Variable(space_id=space.id, key=key, value=value)
        session.add(row)
    row.value = value
    if item.description is not None:
        row.description = item.description
    row.updated_at = utcnow()
    session.flush()
    return row


def set_variable(session: Session, platform: Platform, space: Space, item: KeyValue) -> None:
    put_variable(session, space, item)
    config_changed(session, platform, space)


def delete_variable(session: Session, platform: Platform, space: Space, key: str) -> bool:
    return _delete(session, platform, space, Variable, key)


def _delete(session: Session, platform: Platform, space: Space, model: type[Variable] | type[Secret], key: str) -> bool:
    """Delete one variable or secret; a change restarts the space. False if there was none."""
    row = session.scalar(select(model).where(model.space_id == space.id, model.key == key))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    config_changed(session, platform, space)
    return True


# ----------------------------------------------------------------------------- secrets


def list_secrets(session: Session, space: Space) -> list[Secret]:
    return list(session.scalars(select(Secret).where(Secret.space_id == space.id).order_by(Secret.key)))


def secrets_json(session: Session, space: Space) -> dict[str, dict[str, str | None]]:
    """{KEY: {description, updatedAt}}: keys only, never values (`HfApi.get_space_secrets`)."""
    return {s.key: {"description": s.description, "updatedAt": _iso(s.updated_at)} for s in list_secrets(session, space)}


def put_secret(session: Session, platform: Platform, space: Space, item: KeyValue) -> Secret:
    key = validate_key(item.key, "secret")
    value = validate_value(item.value, key, "secret")
    row = session.scalar(select(Secret).where(Secret.space_id == space.id, Secret.key == key))
    if row is None:
        row = Secret(space_id=space.id, key=key, ciphertext="")
        session.add(row)
    row.ciphertext = platform.cipher.encrypt(value)
    if item.description is not None:
        row.description = item.description
    row.updated_at = utcnow()
    session.flush()
    return row


def set_secret(session: Session, platform: Platform, space: Space, item: KeyValue) -> None:
    put_secret(session, platform, space, item)
    config_changed(session, platform, space)


def delete_secret(session: Session, platform: Platform, space: Space, key: str) -> bool:
    return _delete(session, platform, space, Secret, key)


def secret_keys(session: Session, space: Space) -> set[str]:
    return set(session.scalars(select(Secret.key).where(Secret.space_id == space.id)))


# ----------------------------------------------------------------------------- effects


def config_changed(session: Session, platform: Platform, space: Space) -> None:
    """Restart a built space with the new configuration; an unbuilt one picks it up on first start."""
    from controller.services import lifecycle  # lifecycle -> builds -> space_env here: import at use

    if space.target_build_id is not None and space.desired == "running":
        lifecycle.bump_generation(space)
    elif space.target_build_id is not None:  # paused/sleeping: the next start uses the new config
        space.generation += 1
    space.updated_at = utcnow()
    platform.after_commit(session, platform.kick)


def space_env(session: Session, platform: Platform, space: Space) -> tuple[dict[str, str], dict[str, str]]:
    """(variables, secrets) for the app's environment; secrets decrypted. Never log the second one."""
    variables, skipped = without_reserved_names({v.key: v.value for v in list_variables(session, space)})
    secret_rows = [s for s in list_secrets(session, space) if reserved_reason(s.key) is None]
    skipped += sorted({s.key for s in list_secrets(session, space)} - {s.key for s in secret_rows})
    secrets = {s.key: platform.cipher.decrypt(s.ciphertext) for s in secret_rows}
    for key in skipped:  # stored before the name was reserved: ignored, not fatal
        log.warning("space %s: ignoring variable/secret %s", space.space_id, reserved_reason(key))
    return variables, secrets
