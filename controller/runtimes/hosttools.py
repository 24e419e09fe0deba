"""Host programs the runtimes launch as root: absolute paths found once on a fixed PATH, run with a fixed
environment. Nothing a space controls (its variables, secrets, front matter) ever reaches their
environment or decides which binary runs: those apply inside the sandbox only (see local.py)."""

from __future__ import annotations

import functools
import shutil

TRUSTED_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
HOST_ENV: dict[str, str] = {"PATH": TRUSTED_PATH, "LANG": "C.UTF-8"}
PACKAGES = {"bwrap": "bubblewrap", "setpriv": "util-linux", "prlimit": "util-linux", "nsenter": "util-linux",
            "ip": "iproute2", "iptables": "iptables", "ip6tables": "iptables", "iptables-restore": "iptables",
            "ip6tables-restore": "iptables", "sh": "dash"}  # fmt: skip


class ToolMissing(RuntimeError):
    pass


@functools.cache
def find(name: str) -> str | None:
    """Absolute path of a host tool on TRUSTED_PATH (never the caller's PATH), or None."""
    return shutil.which(name, path=TRUSTED_PATH)


def path(name: str) -> str:
    """Absolute path of a host tool; ToolMissing (saying what to install) if it is not there."""
    found = find(name)
    if found is None:
        package = PACKAGES.get(name, name)
        raise ToolMissing(f"{name} not found in {TRUSTED_PATH}: install it (apt-get install {package})")
    return found


def missing(*names: str) -> list[str]:
    return [name for name in names if find(name) is None]
