"""Wait until an instance answers HTTP (any status below 500 counts as up)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from controller.runtimes.base import Endpoint


async def probe(endpoint: Endpoint, path: str = "/", timeout: float = 2.0) -> int | None:
    """HTTP status of GET path, or None when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(endpoint.url + path, allow_redirects=False) as response,
        ):
            return response.status
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


async def wait_healthy(endpoint: Endpoint, path: str = "/", timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await probe(endpoint, path)
        if status is not None and status < 500:
            return True
        await asyncio.sleep(0.1)
    return False
