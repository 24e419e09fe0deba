"""Log feeds: each source (a build's stored lines, an instance's output) is read once, by one task, and
fanned out to every stream following it. A feed keeps recent lines in memory; streams hold no database
connection and no reader of their own, so 200 followers of one space cost one poller, not 200.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

MAX_LINE = 16_000  # characters of one line kept (an app printing megabytes without a newline)
HISTORY = 2_000  # lines a feed keeps for streams that join late


@dataclass(frozen=True)
class Line:
    seq: int
    text: str
    ts: datetime | None = None


Source = Callable[[], AsyncIterator[Line]]
T = TypeVar("T")


@contextlib.asynccontextmanager
async def closing(lines: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator (its files, its subprocess) however the loop over it ends."""
    try:
        yield lines
    finally:
        close = getattr(lines, "aclose", None)
        if close is not None:
            await close()


@dataclass
class Feed:
    history: deque[Line] = field(default_factory=lambda: deque(maxlen=HISTORY))
    done: bool = False
    followers: int = 0
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def since(self, seq: int) -> tuple[list[Line], bool]:
        """Lines after seq, and whether some were already dropped from the history (a gap)."""
        if not self.history:
            return [], False
        first = self.history[0].seq
        if seq + 1 < first:
            return list(self.history), True
        return [line for line in self.history if line.seq > seq], False

    async def changed(self, timeout: float) -> bool:
        """Wait for new lines or the end; False on timeout."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def pump(self, source: Source) -> None:
        try:
            async with closing(source()) as lines:
                async for line in lines:
                    self.history.append(Line(line.seq, line.text[:MAX_LINE], line.ts))
                    self._notify()
        finally:
            self.done = True
            self._notify()


@dataclass
class LogHub:
    """Feeds by key ("build:ID", "run:INSTANCE"); a feed lives while someone follows it."""

    feeds: dict[str, Feed] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def follow(self, key: str, source: Source) -> AsyncIterator[Feed]:
        feed = self.feeds.get(key)
        if feed is None or feed.done:  # an ended feed keeps serving its followers; newcomers start afresh
            feed = self.feeds[key] = Feed()
            feed.task = asyncio.create_task(feed.pump(source), name=f"log-feed {key}")
        feed.followers += 1
        try:
            yield feed
        finally:
            feed.followers -= 1
            if feed.followers == 0:
                if self.feeds.get(key) is feed:
                    del self.feeds[key]
                if feed.task is not None:
                    feed.task.cancel()
