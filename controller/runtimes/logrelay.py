"""The masking log relay between a local app and its app.log: secrets never reach the disk.

    python -m controller.runtimes.logrelay LOG SECRETS_FD   (stdin: the app's stdout+stderr pipe)

The local runtime starts one relay per instance, in its own session and with a fixed environment, next
to the app's supervisor (not inside the app's cgroup or sandbox). The secrets arrive on an inherited
file descriptor (NUL-separated values, read once, then closed), never on argv or in the environment.
Output is masked with `controller.domain.masking.Masker` a whole number of lines at a time (so a
multi-line secret printed in one write is masked as a whole, and line by line otherwise); a partial line
is written once the app has been quiet for IDLE_FLUSH seconds or it grows past MAX_PARTIAL bytes.
Writes append (O_APPEND). Past LOG_ROTATE_BYTES the relay itself caps the log (`cap_log`) as it writes:
a flooding app writes over 100 MB/s, so a cap checked only on the runtime's status passes let app.log grow
to ~250 MB between two of them. The relay ends when every writer of the pipe is gone (the app tree has
exited).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from pathlib import Path

from controller.domain.masking import Masker

CHUNK = 64 * 1024
LOG_ROTATE_BYTES = 20 * 1024 * 1024
LOG_KEEP_BYTES = 1024 * 1024  # what a cap keeps of the log, in app.log.1
DROPPED = b"[spaceport: earlier output dropped, the log grew too large]\n"
MAX_PARTIAL = 64 * 1024
IDLE_FLUSH = 0.25


def read_secrets(fd: int) -> list[str]:
    """NUL-separated secret values from fd (read to the end, then closed)."""
    data = b""
    with contextlib.suppress(OSError):  # not seekable: a pipe
        os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, CHUNK):
        data += chunk
    os.close(fd)
    return [value.decode("utf-8", "surrogateescape") for value in data.split(b"\0") if value]


def encode_secrets(values: list[str]) -> bytes:
    return b"\0".join(v.encode("utf-8", "surrogateescape") for v in values if v and "\0" not in v)


def cap_log(log: Path, keep: int = LOG_KEEP_BYTES) -> None:
    """Bound a running app's log: past LOG_ROTATE_BYTES keep the last `keep` bytes in app.log.1 and
    truncate app.log (its writers append with O_APPEND, so they carry on at the new end)."""
    with contextlib.suppress(OSError):
        size = log.stat().st_size
        if size <= LOG_ROTATE_BYTES:
            return
        with log.open("rb") as handle:
            handle.seek(max(0, size - keep))
            tail = handle.read(keep)
        log.with_suffix(".log.1").write_bytes(DROPPED + tail)
        os.truncate(log, 0)


class Relay:
    """Masks byte chunks into an output fd, a whole number of lines at a time; with `log` (the file `out`
    appends to) it caps that file whenever a write takes it past LOG_ROTATE_BYTES."""

    def __init__(self, masker: Masker, out: int, log: Path | None = None) -> None:
        self.masker = masker
        self.out = out
        self.log = log
        self.pending = b""

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        complete, newline, rest = self.pending.rpartition(b"\n")
        if newline:
            self.pending = rest
            self._write(complete + newline)
        if len(self.pending) > MAX_PARTIAL:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            data, self.pending = self.pending, b""
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.masker:
            data = self.masker(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        view = memoryview(data)
        while view:
            view = view[os.write(self.out, view) :]
        if self.log is not None and os.fstat(self.out).st_size > LOG_ROTATE_BYTES:
            cap_log(self.log)


def run(source: int, log: Path, masker: Masker) -> None:
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    relay = Relay(masker, out, log)
    try:
        while True:
            ready, _, _ = select.select([source], [], [], IDLE_FLUSH if relay.pending else None)
            if not ready:
                relay.flush()
                continue
            chunk = os.read(source, CHUNK)
            if not chunk:
                break
            relay.feed(chunk)
    finally:
        relay.flush()
        os.close(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m controller.runtimes.logrelay LOG SECRETS_FD", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # stop when the app's output ends, not before
        signal.signal(sig, signal.SIG_IGN)
    masker = Masker(read_secrets(int(args[1])))
    run(sys.stdin.fileno(), Path(args[0]), masker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
