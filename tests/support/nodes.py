"""A second Docker engine on this machine acting as another node ("node B") for registry tests.

Its own --data-root (image store), --exec-root, --pidfile and unix socket, its own default bridge
(made here: `--bridge=none` would not do, dockerd then DELETES any `docker0`, the test engine's) and
no iptables rules of its own (--iptables=false), so it collides neither with the test engine's docker0
nor with its NAT rules; user networks (the docker runtime's `spaceport-apps`) come from an address pool
of their own. Published ports still work (docker-proxy on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

from tests.support.procs import stop_process
from tests.support.tiers import missing

DOCKERD = "/usr/sbin/dockerd"
# node B's addresses, away from docker's default pools (the test engine's); random parts keep two runs apart


def _addresses() -> tuple[str, str]:
    """(the default bridge's address, the user networks' pool)."""
    return f"10.214.{random.randrange(256)}.1/24", f"base=10.213.{16 * random.randrange(16)}.0/20,size=24"


def require_second_engine() -> None:
    """Skip (fail under CI) when a second dockerd cannot run here."""
    if os.geteuid() != 0:
        missing("a second dockerd (node B) needs root")
    if not Path(DOCKERD).exists():
        missing(f"{DOCKERD} is not installed (Debian package docker.io)")


@contextmanager
def second_engine() -> Iterator[str]:
    """Run another dockerd; yield its DOCKER_HOST (unix://...). Stops it and removes its state after."""
    require_second_engine()
    root = Path(tempfile.mkdtemp(prefix="spn-", dir="/var/tmp"))  # short: containerd's socket lives under it
    sock = root / "docker.sock"
    (root / "daemon.json").write_text("{}")  # not /etc/docker/daemon.json: node B is configured here only
    bridge, (bip, pool) = f"spnb{root.name[-6:]}".replace("_", "0")[:15], _addresses()
    host = f"unix://{sock}"
    try:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", bip, "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        with (root / "dockerd.log").open("wb") as log:
            proc = subprocess.Popen(
                [DOCKERD, "--storage-driver=overlay2", f"--host={host}", f"--data-root={root / 'data'}",
                 f"--exec-root={root / 'exec'}", f"--pidfile={root / 'docker.pid'}", f"--bridge={bridge}",
                 "--iptables=false", "--ip-masq=false", f"--default-address-pool={pool}",
                 f"--config-file={root / 'daemon.json'}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_ready(host, proc, root / "dockerd.log")
            yield host
        finally:
            bridges = _bridges(host)
            stop_process(proc, grace=30)  # dockerd stops its containers first
            for made in {*bridges, bridge}:
                _forget_bridge(made)
    finally:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(root / "exec")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(host: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the second dockerd exited: {log.read_text(errors='replace')[-1500:]}")
        with contextlib.suppress(Exception):
            client = docker.DockerClient(base_url=host, timeout=5)
            try:
                if client.ping():
                    return
            finally:
                client.close()
        time.sleep(0.1)
    raise RuntimeError(f"the second dockerd did not answer: {log.read_text(errors='replace')[-1500:]}")


def _bridges(host: str) -> list[str]:
    """Linux bridges of the engine's networks (br-ID12 unless named), to clean up after it stops."""
    with contextlib.suppress(Exception):
        client = docker.DockerClient(base_url=host, timeout=10)
        try:
            found = []
            for network in client.networks.list():
                if network.attrs.get("Driver") == "bridge":
                    options = network.attrs.get("Options") or {}
                    found.append(str(options.get("com.docker.network.bridge.name") or f"br-{network.id[:12]}"))
            return found
        finally:
            client.close()
    return []


def _forget_bridge(bridge: str) -> None:
    """Remove the docker runtime's egress chains for `bridge` (netns.bridge_firewall) and the bridge."""
    if bridge == "docker0":  # never the test engine's
        return
    fwd, inp = f"SPXD-{bridge}"[:28], f"SPXD-IN-{bridge}"[:28]
    for chain, rule in (("DOCKER-USER", ["-i", bridge, "-j", fwd]), ("FORWARD", ["-i", bridge, "-j", fwd]),
                        ("INPUT", ["-i", bridge, "-j", inp])):
        while subprocess.run(["iptables", "-w", "-D", chain, *rule], capture_output=True, check=False).returncode == 0:
            pass
    for chain in (fwd, inp):
        subprocess.run(["iptables", "-w", "-F", chain], capture_output=True, check=False)
        subprocess.run(["iptables", "-w", "-X", chain], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
