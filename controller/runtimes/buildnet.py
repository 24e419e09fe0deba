"""Build network namespaces: like the apps' (netns.py) but on their own subnet and interfaces, with NO
forwarding at all. The only thing a build can reach is its own egress proxy on its slot's host address
(egress.py), which tunnels CONNECT to package index hosts only. Also the firewall of the docker network
that image builds' RUN steps use (no host, no private ranges).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from controller.runtimes import netns

# Builds get their own namespaces on a separate subnet and interface prefix, with NO forwarding at all:
# the only thing a build can reach is the egress proxy listening on its slot's host address
# (controller/runtimes/egress.py), which allows CONNECT to package index hosts only.
BUILD_SUBNET = ipaddress.IPv4Network("10.232.0.0/16")
BUILD_IFACE_PREFIX = "spb"
BUILD_IN_CHAIN = "SPACEPORT-BUILD-IN"
BUILD_FWD_CHAIN = "SPACEPORT-BUILD-FWD"
BUILD_PROXY_PORT = 3128
MAX_BUILD_SLOT = BUILD_SUBNET.num_addresses // 4 - 1


@dataclass(frozen=True)
class BuildSlot(netns.Slot):
    """Like Slot, on BUILD_SUBNET with `spbN{h,c}` interfaces and namespace `spaceport-build-N`."""

    subnet: ClassVar[ipaddress.IPv4Network] = BUILD_SUBNET
    iface_prefix: ClassVar[str] = BUILD_IFACE_PREFIX
    namespace_prefix: ClassVar[str] = "spaceport-build-"


def ensure_build_firewall(proxy_port: int = BUILD_PROXY_PORT) -> None:
    """Builds reach only the proxy port on their own host address; nothing is forwarded (idempotent)."""
    wildcard = f"{BUILD_IFACE_PREFIX}+"
    netns._chain(BUILD_IN_CHAIN)
    netns._rule("filter", BUILD_IN_CHAIN, ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
    netns._rule("filter", BUILD_IN_CHAIN, ["-p", "tcp", "-d", str(BUILD_SUBNET), "--dport", str(proxy_port), "-j", "ACCEPT"])
    netns._rule("filter", BUILD_IN_CHAIN, ["-j", "DROP"])
    netns._rule("filter", "INPUT", ["-i", wildcard, "-j", BUILD_IN_CHAIN], position=1)
    netns._chain(BUILD_FWD_CHAIN)
    netns._rule("filter", BUILD_FWD_CHAIN, ["-i", wildcard, "-j", "DROP"])
    netns._rule("filter", BUILD_FWD_CHAIN, ["-o", wildcard, "-j", "DROP"])
    netns._rule("filter", "FORWARD", ["-j", BUILD_FWD_CHAIN], position=1)


def create_build(slot: BuildSlot) -> None:
    """Namespace + veth pair + addresses, no default route (idempotent): only the host side is reachable."""
    if netns.exists(slot):
        return
    netns.delete(slot)
    netns._run("ip", "netns", "add", slot.netns)
    netns._run("ip", "link", "add", slot.host_if, "type", "veth", "peer", "name", slot.app_if)
    netns._run("ip", "link", "set", slot.app_if, "netns", slot.netns)
    disable_ipv6(slot.host_if)  # no link-local IPv6 path to the host around the IPv4 firewall
    netns._run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.host_if)
    netns._run("ip", "link", "set", slot.host_if, "up")
    inside = ("ip", "-n", slot.netns)
    netns._run(*inside, "addr", "add", f"{slot.app_ip}/30", "dev", slot.app_if)
    netns._run(*inside, "link", "set", slot.app_if, "up")
    netns._run(*inside, "link", "set", "lo", "up")


# Docker image builds: RUN steps run on a docker bridge network; these rules keep them off the host and
# private ranges (appended).
DOCKER_BUILD_IN_CHAIN = "SPACEPORT-DBUILD-IN"
DOCKER_BUILD_FWD_CHAIN = "SPACEPORT-DBUILD-FWD"
DOCKER_BUILD_BLOCKED = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
                        "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")


def ensure_docker_build_firewall(bridge: str, blocked: tuple[str, ...] = DOCKER_BUILD_BLOCKED) -> None:
    """From `bridge`: no new connection to the host itself, nothing forwarded to `blocked` (idempotent)."""
    netns._chain(DOCKER_BUILD_IN_CHAIN)
    netns._rule("filter", DOCKER_BUILD_IN_CHAIN, ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
    netns._rule("filter", DOCKER_BUILD_IN_CHAIN, ["-j", "DROP"])
    netns._rule("filter", "INPUT", ["-i", bridge, "-j", DOCKER_BUILD_IN_CHAIN], position=1)
    netns._chain(DOCKER_BUILD_FWD_CHAIN)
    for cidr in blocked:
        netns._rule("filter", DOCKER_BUILD_FWD_CHAIN, ["-d", cidr, "-j", "DROP"])
    for resolver in resolvers():  # docker's embedded DNS forwards from the container's namespace
        for proto in ("udp", "tcp"):
            netns._rule("filter", DOCKER_BUILD_FWD_CHAIN, ["-d", resolver, "-p", proto, "--dport", "53", "-j", "RETURN"],
                        position=1)
    netns._rule("filter", "FORWARD", ["-i", bridge, "-j", DOCKER_BUILD_FWD_CHAIN], position=1)


def disable_ipv6(iface: str) -> None:
    knob = Path("/proc/sys/net/ipv6/conf", iface, "disable_ipv6")
    if knob.exists():
        knob.write_text("1")


def resolvers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """IPv4 nameservers of resolv.conf: the only hosts in blocked ranges a build container may query (port 53)."""
    found: list[str] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if address.version == 4:
                found.append(str(address))
    return found
