"""Build log lines: stored in the database (so any process can stream them) with secrets masked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller.db.models import BuildLogLine, utcnow

MASK = "***"


def mask(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value and len(value) >= 3:
            text = text.replace(value, MASK)
    return text


class BuildLogWriter:
    """Collects lines from the builder (any thread) and writes them in small batches."""

    def __init__(self, sessions: sessionmaker[Session], build_id: int, secrets: Iterable[str] = (),
                 flush_every: float = 0.2) -> None:
        self._sessions = sessions
        self._build_id = build_id
        self._secrets = [s for s in secrets if s]
        self._pending: list[BuildLogLine] = []
        self._lock = threading.Lock()
        self._flush_every = flush_every
        self._last_flush = time.monotonic()
        with sessions() as session:
            last = session.scalar(select(func.max(BuildLogLine.seq)).where(BuildLogLine.build_id == build_id))
        self._seq = (last or 0) + 1

    def __call__(self, line: str) -> None:
        text = mask(line.rstrip("\n"), self._secrets)[:10_000]
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
