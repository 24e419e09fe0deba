"""uvicorn's access log without credentials in URLs. Query strings carry signed links (Git LFS upload and
download actions, the private-space sign-in bridge's `?token=`) and ZeroGPU's device API paths carry an
instance's capability (`/zerogpu/<capability>/...`): whoever reads a log must not be able to use them.
The path (with the capability replaced) stays, so the log still says what was asked."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

_CAPABILITY = re.compile(r"^/zerogpu/[^/?]+")


def redacted(path: str) -> str:
    """`/a/b?x=1` -> `/a/b?…`, `/zerogpu/CAP/schedule` -> `/zerogpu/…/schedule`."""
    path, query, _ = path.partition("?")
    return _CAPABILITY.sub("/zerogpu/…", path) + ("?…" if query else "")


class Redact(logging.Filter):
    """uvicorn.access records are (client, method, path?query, http version, status): redact the URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redacted(args[2]), *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging config with Redact on the access handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": Redact}
    config["handlers"]["access"]["filters"] = ["redact"]
    return config
