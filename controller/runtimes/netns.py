"""A private network namespace per sandboxed instance: veth pair, NAT out, nothing in.

Layout: slot N gets 10.231.0.0/16's N-th /30: host side .1 (`spxNh`), app side .2 (`spxNc`),
namespace `spaceport-N`. Firewall (iptables, idempotent, shared by all slots):

* INPUT from `spx+`: only replies to connections the host opened (the proxy) are accepted; the app
  cannot open any connection to the host itself, on any address (loopback is its own loopback), so
  the controller's internal endpoints, the database, Redis, dockerd... are out of reach.
* FORWARD from `spx+`: dropped towards the instance subnet (other apps), link-local (cloud metadata)
  and the private ranges in `blocked` (docker bridges...); everything else is forwarded and NATed, so
  the app reaches the internet and the resolvers in /etc/resolv.conf.

The proxy reaches the app at `10.231.x.2:PORT`, the port the app chose in its own namespace.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUBNET = ipaddress.IPv4Network("10.231.0.0/16")
IN_CHAIN = "SPACEPORT-IN"
FWD_CHAIN = "SPACEPORT-FWD"
IFACE_PREFIX = "spx"
DEFAULT_BLOCKED = ("169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
MAX_SLOT = SUBNET.num_addresses // 4 - 1


class NetworkSetupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Slot:
    index: int

    @property
    def netns(self) -> str:
        return f"spaceport-{self.index}"

    @property
    def host_if(self) -> str:
        return f"{IFACE_PREFIX}{self.index}h"

    @property
    def app_if(self) -> str:
        return f"{IFACE_PREFIX}{self.index}c"

    def _addr(self, offset: int) -> str:
        return str(SUBNET.network_address + 4 * self.index + offset)

    @property
    def host_ip(self) -> str:
        return self._addr(1)

    @property
    def app_ip(self) -> str:
        return self._addr(2)

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetworkSetupError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done


def tools_missing() -> list[str]:
    return [tool for tool in ("ip", "iptables", "nsenter") if shutil.which(tool) is None]


def _rule(table: str, chain: str, spec: list[str], position: int | None = None) -> None:
    """Add the rule unless present (iptables -C)."""
    if _run("iptables", "-w", "-t", table, "-C", chain, *spec, check=False).returncode == 0:
        return
    where = ["-I", chain, str(position)] if position else ["-A", chain]
    _run("iptables", "-w", "-t", table, *where, *spec)


def _chain(name: str) -> None:
    _run("iptables", "-w", "-N", name, check=False)


def ensure_firewall(blocked: tuple[str, ...] = DEFAULT_BLOCKED) -> None:
    """Install the shared rules (safe to call on every start)."""
    wildcard = f"{IFACE_PREFIX}+"
    _chain(IN_CHAIN)
    _rule("filter", IN_CHAIN, ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
    _rule("filter", IN_CHAIN, ["-j", "DROP"])
    _rule("filter", "INPUT", ["-i", wildcard, "-j", IN_CHAIN], position=1)
    _chain(FWD_CHAIN)
    _rule("filter", FWD_CHAIN, ["-o", wildcard, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
    for cidr in (str(SUBNET), *blocked):
        _rule("filter", FWD_CHAIN, ["-i", wildcard, "-d", cidr, "-j", "DROP"])
    _rule("filter", FWD_CHAIN, ["-i", wildcard, "-j", "ACCEPT"])
    _rule("filter", "FORWARD", ["-j", FWD_CHAIN], position=1)
    _rule("nat", "POSTROUTING", ["-s", str(SUBNET), "!", "-d", str(SUBNET), "-j", "MASQUERADE"])
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")


def exists(slot: Slot) -> bool:
    return slot.netns_path.exists() and _run("ip", "link", "show", slot.host_if, check=False).returncode == 0


def create(slot: Slot) -> None:
    """Namespace + veth pair + addresses + default route (idempotent)."""
    if exists(slot):
        return
    delete(slot)
    _run("ip", "netns", "add", slot.netns)
    _run("ip", "link", "add", slot.host_if, "type", "veth", "peer", "name", slot.app_if)
    _run("ip", "link", "set", slot.app_if, "netns", slot.netns)
    _run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.host_if)
    _run("ip", "link", "set", slot.host_if, "up")
    inside = ("ip", "-n", slot.netns)
    _run(*inside, "addr", "add", f"{slot.app_ip}/30", "dev", slot.app_if)
    _run(*inside, "link", "set", slot.app_if, "up")
    _run(*inside, "link", "set", "lo", "up")
    _run(*inside, "route", "add", "default", "via", slot.host_ip)


def delete(slot: Slot) -> None:
    _run("ip", "link", "del", slot.host_if, check=False)
    _run("ip", "netns", "del", slot.netns, check=False)


def enter_argv(slot: Slot) -> list[str]:
    """Prefix that runs a command inside the slot's namespace."""
    return ["nsenter", f"--net={slot.netns_path}", "--"]
