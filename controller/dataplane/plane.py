"""DataPlane: keeps HAProxy's map and servers equal to the route table, and feeds activity back.

Only ready routes with a plain `http://IP:PORT` target and safe names are given to HAProxy; every other
route (asleep, paused, unavailable, a hostname target, ZeroGPU) is left out of the map,
so its traffic reaches the Python proxy (the activator, the error pages). A private space is mapped
with its id: HAProxy serves a request itself only with a valid app cookie for that space (an HS256 JWT
it verifies, `jwt_verify`); without one (a first visit, a token, an expired cookie) Python decides.
On a site that trusts path URLs (`paths`: SPACEPORT_PATH_APPS=trusted) a public route's path URL
(`/apps/owner/name/`) is mapped too, to the same slot; a private space's path URL stays in Python (its
access there is the platform's session, which HAProxy never reads).
A route's README headers (`custom_headers`, `disable_embedding`) travel in its map value, so HAProxy adds
to its responses exactly what the Python proxy would; a route whose headers are not all spec values (no
README gives such a route: appheaders drops them) stays on Python, which adds what the route says.

Each mapped space owns one slot backend. Its instance is one dynamic server there; a redeploy adds the
new instance's server, enables it and puts the old one in maintenance (no new requests; open
WebSockets and streams go on), and the old server is deleted once it has no connection left. Removing
a route deletes its map entry first, so the next request goes to Python at once. An instance that
refuses a connection before its route's news arrives (it died; a follower hears of a pause late) is
marked down by HAProxy at once, and the request is redispatched to the slot's backup: Python again. Other spaces' slots
and connections are never touched, and nothing is reloaded.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from controller.dataplane.haproxy import (
    HEADER_FIELDS,
    NO_HEADER,
    PYTHON_BACKUP,
    SERVER_CHECKS,
    SLOT_PREFIX,
    DataPlaneError,
    HAProxyProcess,
)
from controller.domain.appheaders import ALLOWED
from controller.proxy.types import Route

log = logging.getLogger(__name__)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,190}$")
_SPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass(frozen=True)
class Mapping:
    """What HAProxy knows of one route: its map key and value, and the instance's address."""

    key: str  # "owner-name.apps_domain"
    value: str  # "SLOT|strip|/apps/o/n|http://ip:port|public|COEP|COOP|CORP|EMBED" (SLOT filled in by the
    # plane; ACCESS is `public` or, for a private space, its lower-case id: HAProxy then checks the app
    # cookie; COEP/COOP/CORP a spec value or `-`, EMBED `yes` or `no`: see header_fields)
    address: str  # "ip:port" as `add server` takes it
    path_key: str | None = None  # "/apps/owner/name" (lower case) when its path URL is mapped too


MAX_PATH_KEY = 100  # the PROXY v2 unique id that carries it to the slot's Python backup holds 127 bytes


def mapping_of(route: Route, apps_domain: str, *, frame_ancestors: bool = True, paths: bool = False) -> Mapping | None:
    """The mapping of a route HAProxy may carry, or None (the route stays on the Python proxy).
    `frame_ancestors`: HAProxy's config has the site's CSP for routes that disable embedding.
    `paths`: the site serves path URLs as they are (trusted): map a public route's path URL too."""
    if route.state != "ready" or route.visitor_token:
        return None  # HAProxy signs no visitor token (ZeroGPU's X-IP-Token)
    headers = header_fields(route)
    if headers is None or (not route.embeddable and not frame_ancestors):
        return None
    slug = route.slug.lower()
    if not _SLUG.match(slug) or not _SPACE.match(route.space_id):
        return None
    if route.base_path != f"/apps/{route.space_id}":
        return None
    address = _address(route.target)
    if address is None:
        return None
    mode = "strip" if route.strip_base_path else "keep"
    access = route.space_id.lower() if route.private else "public"
    path_key = route.base_path.lower() if paths and not route.private and len(route.base_path) <= MAX_PATH_KEY else None
    return Mapping(f"{slug}.{apps_domain}", f"{mode}|{route.base_path}|http://{address}|{access}|{headers}",
                   address, path_key)


def header_fields(route: Route) -> str | None:
    """"COEP|COOP|CORP|EMBED" of a route's README headers, or None if one is not a spec value (then only
    Python can add it). Values come from the owner's README: only ALLOWED ones (letters and `-`) get here."""
    values = dict.fromkeys(HEADER_FIELDS, NO_HEADER)
    for name, value in route.headers:
        if name not in values or value not in ALLOWED[name] or values[name] != NO_HEADER:
            return None  # not a spec header (or twice): the Python proxy adds it as the route says
        values[name] = value
    return "|".join([*values.values(), "yes" if route.embeddable else "no"])


def _address(target: str) -> str | None:
    """"ip:port" of an http://IP:PORT target (HAProxy's dynamic servers resolve no names)."""
    try:
        parts = urlsplit(target)
        port = parts.port
        ip = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return None
    if parts.scheme != "http" or port is None or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass
class Slot:
    name: str
    server: str | None = None  # the enabled server
    draining: list[str] = field(default_factory=list)  # old servers, deleted once without connections
    key: str | None = None  # map key while mapped
    path_key: str | None = None  # paths.map key while mapped


@dataclass
class Counters:
    stot: int = 0
    bin: int = 0
    bout: int = 0


class DataPlane:
    """Applies routes to a running HAProxy (thread-safe); `poll()` reads stats, feeds activity, drains."""

    def __init__(self, haproxy: HAProxyProcess, apps_domain: str, record: Callable[[str, float], None],
                 clock: Callable[[], float] = time.time, *, paths: bool = False) -> None:
        self.haproxy, self.api = haproxy, haproxy.api
        self.apps_domain, self.record, self.clock = apps_domain, record, clock
        self.paths = paths  # map path URLs too (SPACEPORT_PATH_APPS=trusted)
        self._routes: dict[str, Route] = {}  # space_id (lower) -> the last route applied, for carry_paths
        self._lock = threading.RLock()
        self._free = [f"{SLOT_PREFIX}{n}" for n in range(haproxy.layout.slots, 0, -1)]
        self._slots: dict[str, Slot] = {}  # space_id (lower) -> slot
        self._mapped: dict[str, Mapping] = {}  # space_id (lower) -> what HAProxy has
        self._owners: dict[str, str] = {}  # slot name -> space_id, for stats
        self._seen: dict[tuple[str, str], Counters] = {}
        self._serial = 0
        self._map = self.api.map_id(haproxy.layout.hosts_map)
        self._paths_map = self.api.map_id(haproxy.layout.paths_map)

    # -- routes --------------------------------------------------------------------------------
    def apply(self, space_id: str, route: Route | None) -> None:
        """Make HAProxy carry `route` (or stop carrying the space when None / not mappable)."""
        wanted = (mapping_of(route, self.apps_domain, frame_ancestors=bool(self.haproxy.layout.frame_ancestors),
                             paths=self.paths) if route is not None else None)
        key = space_id.lower()
        with self._lock:
            if route is None:
                self._routes.pop(key, None)
            else:
                self._routes[key] = route
            current = self._mapped.get(key)
            if wanted == current:
                return
            try:
                if wanted is None:
                    self._unmap(key)
                else:
                    self._map_route(key, route.space_id if route is not None else space_id, wanted)
            except (OSError, DataPlaneError) as exc:  # the space falls back to the Python proxy
                log.error("data plane: could not route %s through HAProxy: %s", space_id, exc)
                self._unmap(key, quiet=True)

    def sync(self, routes: list[Route]) -> None:
        """Apply a whole table (start, HAProxy restarted): also unmaps spaces that are gone."""
        with self._lock:
            wanted = {r.space_id.lower(): r for r in routes}
            for key in list(self._mapped):
                if key not in wanted:
                    self.apply(key, None)
            for route in routes:
                self.apply(route.space_id, route)

    def carry_paths(self, paths: bool) -> None:
        """Map path URLs (True) or leave them all to Python (False) from now on, for every route."""
        with self._lock:
            self.paths = paths
            for key, route in list(self._routes.items()):
                self.apply(key, route)

    def _map_route(self, key: str, space_id: str, wanted: Mapping) -> None:
        """Round trip 1: a new server (if the address changed) enabled, the old one to maintenance.
        Round trip 2: the map entry (added, or changed in place), only once the servers are right."""
        slot = self._slots.get(key) or self._take_slot(key, space_id)
        current = self._mapped.get(key)
        if current is None or current.address != wanted.address or slot.server is None:
            self._swap_server(slot, wanted.address)
        steps: list[tuple[str, tuple[str, ...]]] = []
        if slot.key is not None and slot.key != wanted.key:  # the slug changed
            steps.append((f"del map {self._map} {slot.key}", ()))
            slot.key = None
        if slot.path_key is not None and slot.path_key != wanted.path_key:  # renamed, private, or paths off
            steps.append((f"del map {self._paths_map} {slot.path_key}", ()))
            slot.path_key = None
        verb = "add" if slot.key is None else "set"
        steps.append((f"{verb} map {self._map} {wanted.key} {slot.name}|{wanted.value}", ("",)))
        if wanted.path_key is not None:
            verb = "add" if slot.path_key is None else "set"
            steps.append((f"{verb} map {self._paths_map} {wanted.path_key} {slot.name}|{wanted.value}", ("",)))
        try:
            self.api.batch(steps)
        except (OSError, DataPlaneError):
            self.api.command(f"del map {self._map} {wanted.key}")  # never leave an entry we do not track
            if wanted.path_key is not None:
                self.api.command(f"del map {self._paths_map} {wanted.path_key}")
            slot.key = slot.path_key = None
            raise
        slot.key, slot.path_key = wanted.key, wanted.path_key
        self._mapped[key] = wanted

    def _swap_server(self, slot: Slot, address: str) -> None:
        self._serial += 1
        name, old = f"i{self._serial}", slot.server
        steps = [(f"add server {slot.name}/{name} {address} {SERVER_CHECKS}", ("New server registered",)),
                 (f"enable health {slot.name}/{name}", ("",)),
                 (f"enable server {slot.name}/{name}", ("",))]
        if old is not None:
            steps.append((f"set server {slot.name}/{old} state maint", ("",)))
        try:
            self.api.batch(steps)
        except (OSError, DataPlaneError):
            slot.draining.append(name)  # whatever became of it, it is deleted before the slot serves anyone else
            raise
        if old is not None:
            slot.draining.append(old)
        slot.server = name

    def _unmap(self, key: str, quiet: bool = False) -> None:
        slot = self._slots.get(key)
        self._mapped.pop(key, None)
        if slot is None:
            return
        try:
            if slot.key is not None:
                self.api.command(f"del map {self._map} {slot.key}")
                slot.key = None
            if slot.path_key is not None:
                self.api.command(f"del map {self._paths_map} {slot.path_key}")
                slot.path_key = None
            if slot.server is not None:
                self.api.command(f"set server {slot.name}/{slot.server} state maint")
                slot.draining.append(slot.server)
                slot.server = None
        except (OSError, DataPlaneError):
            if not quiet:
                raise
        self._drain(slot)

    def _take_slot(self, key: str, space_id: str) -> Slot:
        if not self._free:
            raise DataPlaneError("every HAProxy slot is in use; the space is served by the Python proxy")
        slot = Slot(self._free.pop())
        self._slots[key] = slot
        self._owners[slot.name] = space_id
        return slot

    def _drain(self, slot: Slot) -> None:
        """Delete old servers that have no connection left; free the slot when it holds nothing."""
        for server in list(slot.draining):
            answer = self.api.batch([(f"set server {slot.name}/{server} state maint", ("", "No such server")),
                                     (f"del server {slot.name}/{server}", ())])[1]
            if answer.startswith("Server deleted") or "No such server" in answer:
                slot.draining.remove(server)
                self._seen.pop((slot.name, server), None)
        if slot.server is None and not slot.draining and slot.key is None and slot.path_key is None:
            space = self._owners.pop(slot.name, "")
            self._slots.pop(space.lower(), None)
            self._free.append(slot.name)

    # -- stats ---------------------------------------------------------------------------------
    def poll(self) -> None:
        """Record activity of every space whose servers moved bytes or took sessions; drain old servers."""
        now = self.clock()
        with self._lock:
            stats = self.api.server_stats()
            for row in stats:
                slot, server = row.get("pxname", ""), row.get("svname", "")
                space = self._owners.get(slot)
                if space is None or server == PYTHON_BACKUP:  # Python records what it serves itself
                    continue
                counters = Counters(_int(row.get("stot")), _int(row.get("bin")), _int(row.get("bout")))
                before = self._seen.get((slot, server))
                self._seen[(slot, server)] = counters
                if before is None and counters.stot == 0:
                    continue
                if before != counters:
                    self.record(space, now)
            for held in list(self._slots.values()):
                if held.draining:
                    self._drain(held)

    def mapped(self) -> dict[str, Mapping]:
        with self._lock:
            return dict(self._mapped)

    def resync_after_restart(self, routes: list[Route]) -> None:
        """HAProxy was restarted (empty map, no servers): forget what it had and apply everything."""
        with self._lock:
            self._free = [f"{SLOT_PREFIX}{n}" for n in range(self.haproxy.layout.slots, 0, -1)]
            self._slots.clear()
            self._mapped.clear()
            self._owners.clear()
            self._seen.clear()
            self._map = self.api.map_id(self.haproxy.layout.hosts_map)
            self._paths_map = self.api.map_id(self.haproxy.layout.paths_map)
            self.sync(routes)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
