"""Build log lines: stored in the database (so any process can stream them) with secrets masked.

`secret_masker` is the one place a space's secrets (and its OAuth client secret) become a Masker: for build logs, app log streams and
every message about a space that is stored or shown (Build/Space/Instance error messages).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller.db.models import BuildLogLine, Space, utcnow
from controller.domain.masking import MASK, Masker
from controller.services.oauth import client_secret
from controller.services.platform import Platform
from controller.services.settings_vars import space_env

__all__ = ["MASK", "BuildLogWriter", "read_lines", "secret_masker"]


def secret_masker(session: Session, platform: Platform, space: Space) -> Masker:
    """A Masker for the space's secrets and its OAuth client secret (decrypts them: build one per stream or
    stored message, not per line)."""
    oauth_secret = client_secret(session, platform, space)
    return Masker([*space_env(session, platform, space)[1].values(), *([oauth_secret] if oauth_secret else [])])


class BuildLogWriter:
    """Collects lines from the builder (any thread) and writes them in small batches."""

    def __init__(self, sessions: sessionmaker[Session], build_id: int, secrets: Iterable[str] | Masker = (),
                 flush_every: float = 0.2) -> None:
        self._sessions = sessions
        self._build_id = build_id
        self.mask = secrets if isinstance(secrets, Masker) else Masker(secrets)  # also for the stored error message
        self._pending: list[BuildLogLine] = []
        self._lock = threading.Lock()
        self._flush_every = flush_every
        self._last_flush = time.monotonic()
        with sessions() as session:
            last = session.scalar(select(func.max(BuildLogLine.seq)).where(BuildLogLine.build_id == build_id))
        self._seq = (last or 0) + 1

    def __call__(self, line: str) -> None:
        text = self.mask(line.rstrip("\n"))[:10_000]
        with self._lock:
            self._pending.append(BuildLogLine(build_id=self._build_id, seq=self._seq, ts=utcnow(), text=text))
            self._seq += 1
            due = time.monotonic() - self._last_flush >= self._flush_every or len(self._pending) >= 200
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if not batch:
            return
        try:
            with self._sessions() as session, session.begin():
                session.add_all(batch)
        except OperationalError:  # e.g. SQLite busy under load: keep the lines and try on the next flush
            fresh = [BuildLogLine(build_id=b.build_id, seq=b.seq, ts=b.ts, text=b.text) for b in batch]
            with self._lock:
                self._pending = fresh + self._pending
            raise


def read_lines(session: Session, build_id: int, after_seq: int = 0, limit: int = 1000) -> list[BuildLogLine]:
    stmt = (
        select(BuildLogLine).where(BuildLogLine.build_id == build_id, BuildLogLine.seq > after_seq)
        .order_by(BuildLogLine.seq).limit(limit)
    )
    return list(session.scalars(stmt))
