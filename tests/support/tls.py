"""One verifying SSL context for every httpx call the tests make.

`httpx.get()` and the other top-level helpers build a Client per call, and with it a fresh SSL context
that parses certifi's CA bundle: 41 ms of CPU per call on these machines, against 1.4 ms with a context
made once (measured, plain http to a closed port). The suite's helpers poll with them about ten times a
second (`wait_stage`, `LiveServer.start`, the tests' own loops), which made that parsing most of the
pytest workers' CPU. The context shared here is exactly the one httpx would make (`verify=True`, the same
environment), so what a test sends and verifies is unchanged; Spaceport itself makes its clients once.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from httpx._transports import default as transports


def share_default_context() -> None:
    """Make httpx's transports reuse one context for the default `verify=True` (other values as before)."""
    original = transports.create_ssl_context
    if getattr(original, "shared", False):
        return
    shared = httpx.create_ssl_context()

    def create(verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return shared
        return original(verify=verify, cert=cert, trust_env=trust_env)

    create.shared = True  # type: ignore[attr-defined]
    transports.create_ssl_context = create  # type: ignore[assignment]
