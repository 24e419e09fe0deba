"""The bus: short notices between a site's processes, so the leader and every replica react within a
second instead of at their next timer.

Two topics: `kick` (desired state changed: the leader reconciles now; sent by any replica or build
worker) and `route` ("PK OWNER/NAME": the route of a space changed; replicas reload it from the
database). The database stays the source of truth: a lost notice only delays a change to the next
periodic pass, and a reconnect makes listeners reload everything (`resync`).

With a Redis broker the bus is Redis pub/sub on one channel per site (pub/sub ignores Redis database
numbers, so the channel is named after the site's database). Otherwise there is one process to tell
and the bus is silent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

import redis
import redis.asyncio as aioredis

from controller.config import Settings

log = logging.getLogger(__name__)
Handler = Callable[[str, str], None]  # (topic, data)
KICK, ROUTE, RESYNC = "kick", "route", "resync"


class Bus(Protocol):
    def publish(self, topic: str, data: str = "") -> None:
        """Send a notice; never blocks and never raises (safe from request threads and the event loop)."""

    async def listen(self, handler: Handler) -> None:
        """Call handler for every notice (including this process's own) until cancelled."""


class LocalBus:
    """One process: nobody else to tell."""

    def publish(self, topic: str, data: str = "") -> None:
        return None

    async def listen(self, handler: Handler) -> None:
        await asyncio.Event().wait()


class RedisBus:
    def __init__(self, url: str, channel: str) -> None:
        self.url, self.channel = url, channel
        self._outbox: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._lock = threading.Lock()

    def publish(self, topic: str, data: str = "") -> None:
        self._outbox.put(f"{topic} {data}".rstrip())
        with self._lock:
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(target=self._send_forever, name="spaceport-bus", daemon=True)
                self._sender.start()

    def _send_forever(self) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=2)
        while True:
            message = self._outbox.get()
            try:
                client.publish(self.channel, message)
            except redis.RedisError as exc:  # the periodic passes cover what this notice would have hastened
                log.warning("bus: could not publish %r: %s", message, exc)

    async def listen(self, handler: Handler) -> None:
        delay = 0.5
        while True:
            try:
                await self._listen_once(handler)
            except (redis.RedisError, OSError) as exc:
                log.warning("bus: listening failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _listen_once(self, handler: Handler) -> None:
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(self.channel)
                handler(RESYNC, "")  # notices sent while we were not subscribed are lost: reload everything
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        topic, _, data = message["data"].decode().partition(" ")
                        handler(topic, data)
        finally:
            await client.aclose()


def site_channel(settings: Settings) -> str:
    return "spaceport:" + hashlib.sha256(settings.db_url.encode()).hexdigest()[:16]


def bus_for(settings: Settings) -> Bus:
    broker = settings.celery_broker
    if broker.startswith(("redis://", "rediss://")):
        return RedisBus(broker, site_channel(settings))
    return LocalBus()
