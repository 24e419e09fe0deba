"""A real image registry for tests: Debian's `docker-registry` (CNCF Distribution) on a free local port.

Dockerd treats 127.0.0.0/8 registries as insecure (plain HTTP) by default, and so do buildah/skopeo
with `--tls-verify=false`, so no certificates are needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.procs import stop_process
from tests.support.server import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"


def registry_available() -> bool:
    return shutil.which(REGISTRY_BIN) is not None


@contextmanager
def local_registry(root: Path) -> Iterator[str]:
    """Run a registry storing under `root`; yield its address `127.0.0.1:PORT`."""
    port = free_port()
    addr = f"127.0.0.1:{port}"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {addr}\n"
        "log:\n  level: warn\n"
    )
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(addr, proc, root / "registry.log")
        yield addr
    finally:
        stop_process(proc)


def _wait_ready(addr: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-500:]}")
        try:
            with urllib.request.urlopen(f"http://{addr}/v2/", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"docker-registry did not answer on {addr}: {log.read_text()[-500:]}")


def repositories(addr: str) -> list[str]:
    """The registry's catalog (what has been pushed)."""
    with urllib.request.urlopen(f"http://{addr}/v2/_catalog", timeout=5) as resp:
        return list(json.load(resp).get("repositories", []))
