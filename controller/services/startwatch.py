"""What a starting app's log says: the last line of its most recent traceback, read sparingly.

The Runtime contract gives an app's output only as `logs(name, follow)`; a running instance's status
carries no log tail. So the log is read whole (follow=False) and only its last lines are kept, and only
when the answer changed or after a growing interval (1 s up to 10 s), so a chatty app loading for
minutes costs a read every 10 s. Lines already in the log before this start (an earlier run of the same
instance) are skipped: their traceback is not this start's cause.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from controller.domain.lifecycle import last_traceback_line
from controller.runtimes.base import Runtime, RuntimeFailure

KEEP_LINES = 400  # enough for a deep traceback; tracebacks of recursion are folded by Python
FIRST_INTERVAL = 1.0
MAX_INTERVAL = 10.0


async def log_lines(runtime: Runtime, name: str, skip: int = 0) -> tuple[int, list[str]]:
    """(number of lines in the log, its last KEEP_LINES lines after the first `skip`)."""
    count = 0
    tail: deque[str] = deque(maxlen=KEEP_LINES)
    try:
        async for line in runtime.logs(name, False):
            count += 1
            if count > skip:
                tail.append(line)
    except (RuntimeFailure, OSError):
        return count, list(tail)
    if count < skip:  # the log was cut (size cap) since the baseline: all of it is new
        return await log_lines(runtime, name, 0)
    return count, list(tail)


class StartWatch:
    """Tracks one start: the log's cause, re-read when the app's answer changes or the interval is up."""

    def __init__(self, runtime: Runtime, name: str, baseline: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime, self.name, self.baseline = runtime, name, baseline
        self._monotonic = clock
        self._answer: int | None = -1  # the answer at the last read (-1: never read)
        self._next = 0.0
        self._interval = FIRST_INTERVAL
        self.cause: str | None = None

    async def read_cause(self, answer: int | None, *, force: bool = False) -> str | None:
        """The last traceback line of this start's output (cached between reads)."""
        now = self._monotonic()
        if force or answer != self._answer or now >= self._next:
            _, lines = await log_lines(self.runtime, self.name, self.baseline)
            self.cause = last_traceback_line(lines)
            self._answer, self._next = answer, now + self._interval
            self._interval = min(self._interval * 2, MAX_INTERVAL)
        return self.cause
