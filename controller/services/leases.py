"""Leases: at most one process of a site holds a named lease at a time (the leader, a sweep).

On PostgreSQL a lease is a session-level advisory lock held on a connection of its own: when the holder
dies, its connection closes and the server releases the lock at once (a SIGKILLed leader is replaced
within the followers' retry interval). The connection asks the server for short TCP keepalives, so a
holder that vanished from the network loses the lock within seconds too. Elsewhere (SQLite: one machine)
it is an flock on a file in the data dir, which the kernel releases when the holder exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from controller.services.platform import Platform

log = logging.getLogger(__name__)


class Lease(Protocol):
    def acquire(self) -> bool:
        """Take the lease if nobody holds it (never waits); True while this object holds it."""

    def check(self) -> bool:
        """Whether this object still holds the lease (False once its connection is gone)."""

    def release(self) -> None: ...


class FileLease:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by apps (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def check(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


class PostgresLease:
    def __init__(self, url: str, name: str) -> None:
        self.key = lease_key(name)
        self._engine = create_engine(url, poolclass=NullPool)
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if self._conn is not None:
            return self.check()
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            log.warning("lease %s: database unreachable: %s", self.key, exc.__class__.__name__)
            return False
        try:
            for setting in ("tcp_keepalives_idle = 5", "tcp_keepalives_interval = 2", "tcp_keepalives_count = 2"):
                conn.execute(text(f"SET {setting}"))
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())
        except SQLAlchemyError:
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def check(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._drop()

    def _drop(self) -> None:
        assert self._conn is not None
        with contextlib.suppress(SQLAlchemyError):
            self._conn.close()
        self._conn = None


def lease_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for `name` (advisory locks are per database, so per site)."""
    digest = hashlib.sha256(f"spaceport-lease:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lease_for(platform: Platform, name: str) -> Lease:
    url = platform.settings.db_url
    if url.startswith("postgresql"):
        return PostgresLease(url, name)
    return FileLease(platform.settings.data_dir / "locks" / f"{name}.lock")


@contextlib.contextmanager
def exclusive(platform: Platform, name: str) -> Iterator[bool]:
    """Hold lease `name` for the block if free: yields False (run nothing) when another process holds it."""
    lease = lease_for(platform, name)
    got = lease.acquire()
    try:
        yield got
    finally:
        if got:
            lease.release()
