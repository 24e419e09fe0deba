"""Login throttling: failed logins counted per (user name, client address) in a sliding window.

Kept in the process's memory (one controller; with several replicas each counts its own), bounded in size
so that a spray of made-up user names cannot grow it without limit. The clock is injected for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_KEYS = 100_000


class LoginThrottle:
    def __init__(self, attempts: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, user: str, address: str) -> int | None:
        """Seconds until another try is allowed, or None if one is allowed now."""
        key, now = (user.lower(), address), self.clock()
        with self._lock:
            times = self._failures.get(key)
            if times is None:
                return None
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) < self.attempts:
                return None
            return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, user: str, address: str) -> None:
        key = (user.lower(), address)
        with self._lock:
            times = self._failures.setdefault(key, deque(maxlen=self.attempts))
            times.append(self.clock())
            self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._failures.pop((user.lower(), address), None)
