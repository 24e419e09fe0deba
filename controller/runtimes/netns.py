"""A private network namespace per sandboxed instance: veth pair, NAT out, nothing in.

Layout: slot N gets 10.231.0.0/16's N-th /30: host side .1 (`spxNh`), app side .2 (`spxNc`),
namespace `spaceport-N`. Egress policy (iptables + ip6tables, shared by all slots, rebuilt atomically
with `iptables-restore --noflush` so an older rule set is upgraded in place on start):

* INPUT from `spx+`: only replies to connections the host opened (the proxy) are accepted; the app
  cannot open any connection to the host itself, on any address (loopback is its own loopback), so
  the controller's internal endpoints, the database, Redis, dockerd... are out of reach.
* FORWARD from `spx+`: denied by default towards every non-public range (`DEFAULT_BLOCKED`: private,
  loopback, link-local/cloud metadata, CGNAT, multicast, reserved, documentation; IPv6 ULA,
  link-local, loopback, multicast, mapped/translated), including the instance subnet (other apps);
  the rest (the internet) is forwarded and NATed. DNS (udp/tcp 53) is allowed to exactly the
  resolvers in /etc/resolv.conf (apps use the host's resolv.conf), nothing else in those ranges.
* Nothing is forwarded *to* an app except replies (containers and the LAN cannot reach it).
* Per slot, `create(slot, allow=...)` opens CIDRs from the operator's allow-list
  (SPACEPORT_EGRESS_ALLOW), in the `SPACEPORT-ALLOW` chain, matched on that slot's interface only.
* The host side of each veth has IPv6 disabled: an app cannot reach the host over link-local IPv6.
* The platform's own listener (controller.services.listener) is the one exception, and only for
  instances that need it (a zero-* flavor's ZeroGPU device API, an hf_oauth app's OpenID provider): the
  controller serves it at `LISTENER_ADDRESS` (a link-local address added to the host's loopback, like a
  cloud metadata service) on one port; `SPACEPORT-LISTENER`, jumped to from INPUT for
  that address before anything else, lets the host itself (lo) through, accepts exactly that TCP port
  from the interfaces (a slot's veth, or a docker container's source address on its bridge) listed in
  `SPACEPORT-LISTENER-ALLOW` (one rule each, named by a comment), and drops everything else sent to it (other slots, other ports, the LAN).

The proxy reaches the app at `10.231.x.2:PORT`, the port the app chose in its own namespace.
`bridge_firewall` applies the same policy to a docker bridge (docker runtime, DOCKER-USER).
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from controller.runtimes import hosttools

SUBNET = ipaddress.IPv4Network("10.231.0.0/16")
IN_CHAIN = "SPACEPORT-IN"
FWD_CHAIN = "SPACEPORT-FWD"
ALLOW_CHAIN = "SPACEPORT-ALLOW"
LISTENER_CHAIN = "SPACEPORT-LISTENER"
LISTENER_ALLOW_CHAIN = "SPACEPORT-LISTENER-ALLOW"
LISTENER_ADDRESS = "169.254.231.1"  # the platform's own listener (on lo; outside SUBNET, never a slot's)
IFACE_PREFIX = "spx"
DEFAULT_BLOCKED = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
DEFAULT_BLOCKED6 = (
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)  # fmt: skip
MAX_SLOT = SUBNET.num_addresses // 4 - 1
RESOLV_CONF = Path("/etc/resolv.conf")
log = logging.getLogger(__name__)


class NetworkSetupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Slot:
    """The N-th /30 of `subnet`: namespace `{namespace_prefix}N`, interfaces `{iface_prefix}N{h,c}`."""

    index: int
    subnet: ClassVar[ipaddress.IPv4Network] = SUBNET
    iface_prefix: ClassVar[str] = IFACE_PREFIX
    namespace_prefix: ClassVar[str] = "spaceport-"

    @property
    def netns(self) -> str:
        return f"{self.namespace_prefix}{self.index}"

    @property
    def host_if(self) -> str:
        return f"{self.iface_prefix}{self.index}h"

    @property
    def app_if(self) -> str:
        return f"{self.iface_prefix}{self.index}c"

    def _addr(self, offset: int) -> str:
        return str(self.subnet.network_address + 4 * self.index + offset)

    @property
    def host_ip(self) -> str:
        return self._addr(1)

    @property
    def app_ip(self) -> str:
        return self._addr(2)

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns


def _run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a host tool by absolute path with the fixed host environment."""
    try:
        argv = [hosttools.path(args[0]), *args[1:]]
    except hosttools.ToolMissing as exc:
        raise NetworkSetupError(str(exc)) from None
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, env=hosttools.HOST_ENV)
    if check and done.returncode != 0:
        raise NetworkSetupError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done


def tools_missing() -> list[str]:
    return hosttools.missing("ip", "iptables", "iptables-restore", "nsenter")


def _rule(table: str, chain: str, spec: list[str], position: int | None = None, tool: str = "iptables") -> None:
    """Add the rule unless present (iptables -C)."""
    if _run(tool, "-w", "-t", table, "-C", chain, *spec, check=False).returncode == 0:
        return
    where = ["-I", chain, str(position)] if position else ["-A", chain]
    _run(tool, "-w", "-t", table, *where, *spec)


def _chain(name: str, tool: str = "iptables") -> None:
    _run(tool, "-w", "-N", name, check=False)


# ---------------------------------------------------------------- egress policy
def resolvers(path: Path = RESOLV_CONF) -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) nameservers of resolv.conf: the only hosts in blocked ranges apps may query (port 53)."""
    found: tuple[list[str], list[str]] = ([], [])
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            found[address.version == 6].append(str(address))
    return found


def parse_allow(value: str | Iterable[str]) -> tuple[str, ...]:
    """Allow-list CIDRs ("10.1.0.0/16, fd12::/64") normalized; ValueError naming a bad entry."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"egress allow-list entry {item!r} is not a CIDR (e.g. 10.1.0.0/16 or fd12::/64)") from None
    return tuple(dict.fromkeys(networks))


def policy_rules(chain: str, match: list[str], blocked: Iterable[str], dns: Iterable[str], allow_chain: str) -> list[str]:
    """Restore lines for a chain that filters new connections of packets matching `match`: allow-list
    chain, DNS to the resolvers, blocked ranges dropped, the rest accepted."""
    head = " ".join(match)
    lines = [f"-A {chain} {head} -j {allow_chain}"]
    lines += [f"-A {chain} {head} -d {r} -p {proto} --dport 53 -j ACCEPT" for r in dns for proto in ("udp", "tcp")]
    lines += [f"-A {chain} {head} -d {cidr} -j DROP" for cidr in blocked]
    return lines


def _restore(tool: str, chains: list[str], lines: list[str]) -> None:
    text = "*filter\n" + "".join(f":{c} - [0:0]\n" for c in chains) + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
    _run(tool, "--noflush", "--wait", stdin=text)


def _family_rules(blocked: Iterable[str], dns: list[str]) -> list[str]:
    wildcard = f"{IFACE_PREFIX}+"
    established = "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
    lines = [f"-A {IN_CHAIN} {established}", f"-A {IN_CHAIN} -j {ALLOW_CHAIN}"]
    lines += [f"-A {IN_CHAIN} -d {r} -p {proto} --dport 53 -j ACCEPT" for r in dns for proto in ("udp", "tcp")]
    lines += [f"-A {IN_CHAIN} -j DROP", f"-A {FWD_CHAIN} -o {wildcard} {established}", f"-A {FWD_CHAIN} -o {wildcard} -j DROP"]
    lines += policy_rules(FWD_CHAIN, ["-i", wildcard], blocked, dns, ALLOW_CHAIN)
    return [*lines, f"-A {FWD_CHAIN} -i {wildcard} -j ACCEPT"]


def ipv6_enabled() -> bool:
    return Path("/proc/net/if_inet6").exists()


def ensure_firewall(blocked: tuple[str, ...] = DEFAULT_BLOCKED, blocked6: tuple[str, ...] = DEFAULT_BLOCKED6) -> None:
    """Install or upgrade the shared rules (idempotent; each chain is replaced in one transaction)."""
    v4, v6 = resolvers()
    families = [("iptables", (str(SUBNET), *blocked), v4)]
    if ipv6_enabled():
        families.append(("ip6tables", blocked6, v6))
    for tool, ranges, dns in families:
        _chain(ALLOW_CHAIN, tool)
        _restore(f"{tool}-restore", [IN_CHAIN, FWD_CHAIN], _family_rules(ranges, dns))
        _rule("filter", "INPUT", ["-i", f"{IFACE_PREFIX}+", "-j", IN_CHAIN], position=1, tool=tool)
        _rule("filter", "FORWARD", ["-j", FWD_CHAIN], position=1, tool=tool)
    _rule("nat", "POSTROUTING", ["-s", str(SUBNET), "!", "-d", str(SUBNET), "-j", "MASQUERADE"])
    _first_in_input()
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")


def _slot_rules(tool: str, chain: str, iface: str) -> list[str]:
    listed = _run(tool, "-w", "-S", chain, check=False).stdout.splitlines()
    return [line for line in listed if f" -i {iface} " in f"{line} "]


def set_allow(iface: str, allow: tuple[str, ...], chain: str = ALLOW_CHAIN) -> None:
    """Exactly these CIDRs open (ACCEPT) for new connections arriving on `iface` (idempotent)."""
    for tool, version in (("iptables", 4), ("ip6tables", 6)):
        if version == 6 and not ipv6_enabled():
            continue
        wanted = [c for c in allow if ipaddress.ip_network(c).version == version]
        for line in _slot_rules(tool, chain, iface):
            _run(tool, "-w", "-D", *line.split()[1:], check=False)
        for cidr in wanted:
            _run(tool, "-w", "-A", chain, "-i", iface, "-d", cidr, "-j", "ACCEPT")


def _clear_allow(iface: str) -> None:
    for tool in ("iptables", "ip6tables"):
        if hosttools.find(tool) is None:
            continue
        for line in _slot_rules(tool, ALLOW_CHAIN, iface):
            _run(tool, "-w", "-D", *line.split()[1:], check=False)


def bridge_firewall(bridge: str, allow: tuple[str, ...], blocked: tuple[str, ...] = DEFAULT_BLOCKED) -> None:
    """The apps' egress policy for a docker bridge: its own two chains (replaced in one transaction),
    jumped to from DOCKER-USER (forwarded: RETURN lets docker's rules carry on, DROP ends it) and INPUT
    (the host itself: replies only) for packets arriving from `bridge`. IPv4 only: the docker runtime
    creates its network without IPv6."""
    fwd, inp = f"SPXD-{bridge}"[:28], f"SPXD-IN-{bridge}"[:28]
    dns = resolvers()[0]
    mine = [c for c in allow if ipaddress.ip_network(c).version == 4]
    lines = [f"-A {fwd} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"]
    lines += [f"-A {fwd} -d {cidr} -j RETURN" for cidr in mine]
    lines += [f"-A {fwd} -d {r} -p {proto} --dport 53 -j RETURN" for r in dns for proto in ("udp", "tcp")]
    lines += [f"-A {fwd} -d {cidr} -j DROP" for cidr in blocked]
    lines += [f"-A {fwd} -j RETURN", f"-A {inp} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    lines += [f"-A {inp} -d {cidr} -j ACCEPT" for cidr in mine]
    lines += [f"-A {inp} -d {r} -p {proto} --dport 53 -j ACCEPT" for r in dns for proto in ("udp", "tcp")]
    lines += [f"-A {inp} -j DROP"]
    _restore("iptables-restore", [fwd, inp], lines)
    docker_user = _run("iptables", "-w", "-S", "DOCKER-USER", check=False).returncode == 0
    _rule("filter", "DOCKER-USER" if docker_user else "FORWARD", ["-i", bridge, "-j", fwd], position=1)
    _rule("filter", "INPUT", ["-i", bridge, "-j", inp], position=1)
    _first_in_input()


def exists(slot: Slot) -> bool:
    return slot.netns_path.exists() and _run("ip", "link", "show", slot.host_if, check=False).returncode == 0


def create(slot: Slot, allow: tuple[str, ...] = (), listener: int | None = None) -> None:
    """Namespace + veth pair + addresses + default route (idempotent), the slot's allow-list, and the
    platform listener's port opened for it (`listener`: see `listener_port`) or closed (None)."""
    if not exists(slot):
        delete(slot)
        _run("ip", "netns", "add", slot.netns)
        _run("ip", "link", "add", slot.host_if, "type", "veth", "peer", "name", slot.app_if)
        _run("ip", "link", "set", slot.app_if, "netns", slot.netns)
        _no_ipv6(slot.host_if)
        _run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.host_if)
        _run("ip", "link", "set", slot.host_if, "up")
        inside = ("ip", "-n", slot.netns)
        _run(*inside, "addr", "add", f"{slot.app_ip}/30", "dev", slot.app_if)
        _run(*inside, "link", "set", slot.app_if, "up")
        _run(*inside, "link", "set", "lo", "up")
        _run(*inside, "route", "add", "default", "via", slot.host_ip)
    set_allow(slot.host_if, allow)
    set_listener_access(slot.host_if, ["-i", slot.host_if], listener)


def _no_ipv6(iface: str) -> None:
    knob = Path(f"/proc/sys/net/ipv6/conf/{iface}/disable_ipv6")
    if knob.exists():
        knob.write_text("1")


def delete(slot: Slot) -> None:
    _clear_allow(slot.host_if)
    set_listener_access(slot.host_if, ["-i", slot.host_if], None)
    _run("ip", "link", "del", slot.host_if, check=False)
    _run("ip", "netns", "del", slot.netns, check=False)


def enter_argv(slot: Slot) -> list[str]:
    """Prefix that runs a command inside the slot's namespace."""
    return [hosttools.path("nsenter"), f"--net={slot.netns_path}", "--"]


# ---------------------------------------------------------------- the platform's own listener
def listener_port(env: dict[str, str]) -> int | None:
    """The listener port an instance's environment points at, if the instance is one the listener serves:
    a zero-* flavor's SPACES_ZERO_DEVICE_API_URL, an hf_oauth app's OPENID_PROVIDER_URL (the platform sets
    them; a space's own variables of these names are dropped before the runtime sees the environment)."""
    urls = [env.get("OPENID_PROVIDER_URL", "")]
    if env.get("SPACES_ZERO_GPU") == "true":
        urls.append(env.get("SPACES_ZERO_DEVICE_API_URL", ""))
    return next((port for port in map(_listener_url_port, urls) if port), None)


def _listener_url_port(text: str) -> int | None:
    url = urlsplit(text)
    try:
        port = url.port
    except ValueError:
        return None
    return port if url.scheme == "http" and url.hostname == LISTENER_ADDRESS and port else None


def ensure_listener_address() -> None:
    """LISTENER_ADDRESS on the host's loopback (idempotent) and the chain that guards it, jumped to
    first in INPUT: lo passes on to the usual rules, listed interfaces reach their port, the rest drops."""
    shown = _run("ip", "-4", "addr", "show", "dev", "lo").stdout
    if f"inet {LISTENER_ADDRESS}/" not in shown:
        _run("ip", "addr", "add", f"{LISTENER_ADDRESS}/32", "dev", "lo")
    _chain(LISTENER_ALLOW_CHAIN)
    _restore("iptables-restore", [LISTENER_CHAIN], [f"-A {LISTENER_CHAIN} -i lo -j RETURN", f"-A {LISTENER_CHAIN} -j {LISTENER_ALLOW_CHAIN}",
                                                 f"-A {LISTENER_CHAIN} -j DROP"])
    _first_in_input()


def _first_in_input() -> None:
    """The guard's jump is INPUT's first rule (other chains insert theirs at 1 too: re-asserted after)."""
    if _run("iptables", "-w", "-S", LISTENER_CHAIN, check=False).returncode != 0:
        return
    jump = ["-d", f"{LISTENER_ADDRESS}/32", "-j", LISTENER_CHAIN]
    rules = [line for line in _run("iptables", "-w", "-S", "INPUT").stdout.splitlines() if line.startswith("-A ")]
    if rules and rules[0].split()[2:] == jump:
        return
    _run("iptables", "-w", "-I", "INPUT", "1", *jump)
    for number in reversed([n for n, line in enumerate(rules, start=2) if line.split()[2:] == jump]):
        _run("iptables", "-w", "-D", "INPUT", str(number))


def set_listener_access(tag: str, match: list[str], port: int | None) -> None:
    """Open the listener's `port` for packets matching `match` (["-i", veth] for a slot, ["-s", ip,
    "-i", bridge] for a docker container), replacing the rule named `tag` (its comment: a slot's veth, a
    container's name, so it is found again when the container's address is gone); None closes it.
    Idempotent; a no-op to close without the chain."""
    if hosttools.find("iptables") is None or _run("iptables", "-w", "-S", LISTENER_ALLOW_CHAIN, check=False).returncode:
        if port is None:
            return
        ensure_listener_address()
    for line in _run("iptables", "-w", "-S", LISTENER_ALLOW_CHAIN).stdout.splitlines():
        if f" --comment {tag} " in line or f' --comment "{tag}" ' in line:
            _run("iptables", "-w", "-D", *line.split()[1:], check=False)
    if port is not None:
        _run("iptables", "-w", "-A", LISTENER_ALLOW_CHAIN, *match, "-p", "tcp", "--dport", str(port),
             "-m", "comment", "--comment", tag, "-j", "ACCEPT")
