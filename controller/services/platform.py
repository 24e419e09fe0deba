"""The Platform: settings plus the long-lived resources every process shares (DB engine, sessions)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.fernet import Fernet
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from controller.config import Settings
from controller.db.session import make_engine, make_sessionmaker, migrate, transaction


@dataclass
class Platform:
    settings: Settings
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    # Hooks the hosting process plugs in: the controller kicks its reconciler; both enqueue builds.
    kick: Callable[[], None] = field(default=lambda: None)
    enqueue_build: Callable[[int], None] = field(default=lambda _build_id: None)
    # Set when apps would run unsandboxed on the host and the admin did not opt in: only admins may push.
    untrusted_push_refusal: str | None = None

    def __post_init__(self) -> None:
        self.settings.ensure_dirs()
        self.engine = make_engine(self.settings.db_url)
        self.sessions = make_sessionmaker(self.engine)
        event.listen(self.sessions, "after_commit", _run_after_commit)
        event.listen(self.sessions, "after_rollback", _drop_after_commit)

    def after_commit(self, session: Session, hook: Callable[[], None]) -> None:
        """Run hook once the session's transaction has committed (e.g. enqueue a build it created)."""
        session.info.setdefault("after_commit", []).append(hook)

    def queue_build(self, session: Session, build_id: int) -> None:
        self.after_commit(session, lambda: self.enqueue_build(build_id))
        self.after_commit(session, self.kick)

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with transaction(self.sessions) as session:
            yield session

    @cached_property
    def cipher(self) -> SecretCipher:
        return SecretCipher(self.settings.key)

    def dispose(self) -> None:
        self.engine.dispose()


def _run_after_commit(session: Session) -> None:
    hooks = session.info.pop("after_commit", [])
    for hook in hooks:
        hook()


def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


class SecretCipher:
    """Encrypts space secrets at rest with a key derived from the platform key."""

    def __init__(self, platform_key: str) -> None:
        derived = hashlib.sha256(b"spaceport-secrets:" + platform_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()
