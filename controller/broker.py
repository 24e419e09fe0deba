"""The embedded Celery broker: kombu's filesystem transport, made safe for concurrent use.

The stock transport creates a message file before writing it, so a fast consumer can read a half
written message (kombu #1551), and it claims messages with a move to the temp dir (a copy across
filesystems). Here a message is written to a hidden temp file then renamed into place, and claimed by an
atomic rename inside the same directory tree. No server is needed: the default for `spaceport serve`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        folder = Path(self.data_folder_out)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(str_to_bytes(dumps(payload)))
        os.replace(tmp, folder / name)

    def _get(self, queue: str, timeout: Any = None) -> Any:
        folder = Path(self.data_folder_in)
        claimed = Path(self.processed_folder)
        suffix = f".{queue}.msg"
        for filename in sorted(os.listdir(folder)):
            if filename.startswith(".") or not filename.endswith(suffix):
                continue
            target = claimed / f"{filename}.{os.getpid()}"
            try:
                os.rename(folder / filename, target)
            except OSError:
                continue  # another consumer won it
            payload = target.read_bytes()
            target.unlink(missing_ok=True)
            return loads(bytes_to_str(payload))
        raise Empty()

    def _size(self, queue: str) -> int:
        suffix = f".{queue}.msg"
        return sum(1 for f in os.listdir(self.data_folder_in) if f.endswith(suffix) and not f.startswith("."))


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    TRANSPORT_ALIASES["spacefs"] = "controller.broker:Transport"


def transport_options(broker_dir: Path, poll: float = 0.05) -> dict[str, Any]:
    queue = broker_dir / "queue"
    claimed = broker_dir / "claimed"
    control = broker_dir / "control"
    for d in (queue, claimed, control):
        d.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "processed_folder": str(claimed),
        "control_folder": str(control),
        "store_processed": True,
        "polling_interval": poll,
    }
