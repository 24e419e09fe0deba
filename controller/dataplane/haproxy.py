"""HAProxy as Spaceport's data plane: the config it starts with, the child process, its runtime API.

The config never changes while HAProxy runs. Routes live in two map files that the runtime API edits
(`hosts.map`: app hostname -> `SLOT|MODE|BASE|ORIGIN|ACCESS|COEP|COOP|CORP|EMBED`; `paths.map`: a path
URL's prefix `/apps/owner/name`, lower-case -> the same value), and in a fixed pool of slot backends
(`s1`..`sN`) whose servers are added and removed at run time (`add server`, `set server ... state`,
`del server`). Everything the maps do not name (the platform, unknown, sleeping, starting, failing and
private spaces) goes to the default backend: Spaceport's own ASGI app, which stays the activator.

Path URLs are looked up only where ProxyMiddleware.resolve would take them as path-based (the Host is
not an app host) and only as `/apps/OWNER/NAME/...` with the slash (the bare prefix, the waking page's
status and anything percent-encoded in the prefix stay in Python). The plane maps them only on sites
with SPACEPORT_PATH_APPS=trusted (the other modes redirect or sandbox them in Python). A slot's backup
(Python, when the instance refuses a connection) is reached through the `fallback` frontend on a unix
socket, which puts back the path the visitor asked for (sent as the PROXY v2 unique id): Python must see
`/apps/o/n/x`, not the app's `/x`.

What the Python proxy does to app traffic, the config does too (see forward.py / isolation.py):
X-Forwarded-For/Host/Proto; the platform's cookies and a platform token in Authorization or
X-HF-Authorization never reach an app; an app never sets the platform's cookies; a Location at the
app's internal origin becomes a path; host URLs under the app's base path are stripped (Gradio) or
get it prepended (Streamlit). Nothing is buffered (WebSocket and SSE pass as they come).
On path URLs (the platform's origin) an app's `Service-Worker-Allowed` and `Clear-Site-Data` are dropped
and a Location path gets the prefix as requested, as isolation.response_filter and
middleware._location_rewriter do.
A route's README headers (isolation.route_headers) are added to its app's responses: each of COEP, COOP
and CORP (a map field, `-` for none) replaces the app's own, and only a value its spec defines is ever
written (the config lists them: whatever else a map field held would add nothing); EMBED `no` adds the
site's fixed `frame-ancestors` CSP next to the app's own. Not to a 101 (Python adds none to a WebSocket's)
and not to what the slot's Python backup answered (Python adds its own).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.domain.appheaders import ALLOWED

HAPROXY = "/usr/sbin/haproxy"
PYTHON_BACKEND = "spaceport"
PYTHON_BACKUP = "python"  # every slot's backup server: Spaceport's own app
# a dynamic server is health-checked (TCP) and marked down on its first failed connection
SERVER_CHECKS = "check inter 2s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down"
SLOT_PREFIX = "s"
_SAFE_PATH = re.compile(r"^[^\"'\n\r\\$,() ]+$")  # paths go inside quotes and converter arguments
_COOKIE = re.compile(r"^[A-Za-z0-9_-]+$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")
_SECRET = re.compile(r"^[0-9a-f]{64}$")
# the CSP a non-embeddable route gets (isolation.frame_ancestors): 'none' or a plain origin, nothing to escape
_FRAME_ANCESTORS = re.compile(
    r"^frame-ancestors ('none'|https?://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?)$")
# the map value's README header fields, in the order the Python proxy appends them (appheaders: sorted names)
HEADER_FIELDS: tuple[str, ...] = tuple(sorted(ALLOWED))
FIRST_HEADER_FIELD = 6  # SLOT|MODE|BASE|ORIGIN|ACCESS come first
NO_HEADER = "-"


def frame_ancestors_fits(value: str) -> bool:
    """Can HAProxy's config carry this CSP value as it is (see _FRAME_ANCESTORS)?"""
    return bool(_FRAME_ANCESTORS.match(value))


# Exact header work that HAProxy's rules cannot express, run only when a rule saw it is needed:
# drop the headers a request's Connection header names (hop-by-hop, as forward.upstream_headers), and
# drop the Set-Cookie lines that would set one of the platform's cookies (as isolation.response_filter).
LUA = """
local keep = { ["keep-alive"] = true, ["close"] = true, ["upgrade"] = true, ["host"] = true, ["connection"] = true }

core.register_action("spaceport_hop", { "http-req" }, function(txn)
  local conn = txn.http:req_get_headers()["connection"]
  if conn == nil then return end
  for _, value in pairs(conn) do
    for token in string.gmatch(value, "[^,%s]+") do
      if not keep[string.lower(token)] then txn.http:req_del_header(token) end
    end
  end
end, 0)

core.register_action("spaceport_cookies", { "http-res" }, function(txn, names)
  local cookies = txn.http:res_get_headers()["set-cookie"]
  if cookies == nil then return end
  local platform = {}
  for name in string.gmatch(names, "[^|]+") do platform[name] = true end
  local kept = {}
  for i = 0, #cookies do
    local value = cookies[i]
    if value ~= nil then
      local name = string.lower(string.match(value, "^[^;=]*") or ""):gsub("^%s+", ""):gsub("%s+$", "")
      name = name:gsub("^__host%-", ""):gsub("^__secure%-", "")
      if not platform[name] then kept[#kept + 1] = value end
    end
  end
  txn.http:res_del_header("set-cookie")
  for _, value in ipairs(kept) do txn.http:res_add_header("set-cookie", value) end
end, 1)
"""


class DataPlaneError(Exception):
    """HAProxy could not be started or refused a runtime command; the message says what happened."""


MAX_SOCKET_PATH = 97  # HAProxy's own limit on a stats socket path (below the kernel's 107)


@dataclass(frozen=True)
class Layout:
    """Where HAProxy listens, where the Python app listens, and the files of this one process."""

    bind_host: str
    bind_port: int
    python_port: int
    run_dir: Path  # config, map and stats socket
    apps_domain: str
    platform_cookies: tuple[str, ...]
    token_prefix: str
    app_cookie: str = "spaceport_app_session"  # a private space's access: an HS256 JWT (proxy.appauth)
    app_cookie_secret: str = ""  # its secret (hex); empty: private spaces stay on Python
    slots: int = 256
    threads: int = 0  # 0: one per core
    # added to responses of routes with `disable_embedding` (isolation.frame_ancestors of the site's origin);
    # empty: HAProxy carries no such route (they stay on Python)
    frame_ancestors: str = "frame-ancestors 'none'"

    @property
    def config(self) -> Path:
        return self.run_dir / "haproxy.cfg"

    @property
    def hosts_map(self) -> Path:
        return self.run_dir / "hosts.map"

    @property
    def paths_map(self) -> Path:
        return self.run_dir / "paths.map"

    @property
    def fallback(self) -> Path:
        return self.run_dir / "py.sock"  # shorter than `socket`: fits where it fits

    @property
    def lua(self) -> Path:
        return self.run_dir / "spaceport.lua"

    @property
    def socket(self) -> Path:
        return self.run_dir / "admin.sock"

    @property
    def socket_fits(self) -> bool:
        return len(str(self.socket)) <= MAX_SOCKET_PATH


def _check(layout: Layout) -> None:
    for path in (layout.config, layout.hosts_map, layout.paths_map, layout.socket, layout.fallback, layout.lua):
        if not _SAFE_PATH.match(str(path)):
            raise DataPlaneError(f"HAProxy cannot use the path {path!r}: choose a data dir without quotes")
    if not layout.socket_fits:
        raise DataPlaneError(f"the stats socket path {layout.socket} is too long for a unix socket")
    if not _DOMAIN.match(layout.apps_domain):
        raise DataPlaneError(f"APPS_DOMAIN {layout.apps_domain!r} is not a plain host name")
    if not all(_COOKIE.match(c) for c in (*layout.platform_cookies, layout.app_cookie, layout.token_prefix)):
        raise DataPlaneError("platform cookie names and the token prefix must be letters, digits, _ or -")
    if layout.app_cookie_secret and not _SECRET.match(layout.app_cookie_secret):
        raise DataPlaneError("the app cookie secret must be 64 hex characters")
    if layout.frame_ancestors and not frame_ancestors_fits(layout.frame_ancestors):
        raise DataPlaneError(f"the frame-ancestors policy {layout.frame_ancestors!r} is not 'none' or a plain origin")
    if not _HOST.match(layout.bind_host) or not 0 < layout.bind_port < 65536 or layout.slots < 1:
        raise DataPlaneError(f"cannot listen on {layout.bind_host!r}:{layout.bind_port}")


def render_config(layout: Layout) -> str:
    """The whole haproxy.cfg (see the module docstring); values are validated first."""
    _check(layout)
    return "\n".join([*_global(layout), *_frontend(layout), *_backends(layout)]) + "\n"


def _global(layout: Layout) -> list[str]:
    threads = [f"    nbthread {layout.threads}"] if layout.threads else []
    return [
        "global",
        f'    stats socket "{layout.socket}" mode 600 level admin',
        "    stats timeout 30s",
        f'    lua-load "{layout.lua}"',
        "    hard-stop-after 5s",
        "    noreuseport",  # a taken port fails the start instead of sharing it
        *threads,
        "defaults",
        "    mode http",
        "    option http-keep-alive",  # never http-server-close: keep-alive both ways
        # a visitor's connection keeps its own upstream connection (keep-alive to the app). HAProxy 2.6 keeps
        # no idle pool for servers added at run time: with `safe` every request to a slot opened a new
        # connection (bench: 4x the CPU per request); `never` is also the strictest (nothing shared)
        "    http-reuse never",
        "    timeout connect 10s",
        "    timeout http-request 60s",
        "    timeout http-keep-alive 60s",
        "    timeout client 1h",  # an SSE stream may be quiet this long; Python has no read timeout
        "    timeout server 1h",
        "    timeout tunnel 24h",  # WebSocket once upgraded
        # a visitor who closes a quiet stream (EventSource, a followed log) sends only a FIN. Without
        # abortonclose HAProxy kept the upstream open until the next byte the app sent failed to reach the
        # visitor (a log stream's 15 s keepalive: its slot came back after 25-30 s, and 200 closed streams
        # kept a client out of new ones); with it the upstream closes at once, as the Python proxy does.
        # Browsers and HTTP/1.1 clients never half-close a request they still want answered.
        "    option abortonclose",
        "    timeout client-fin 10s",
        "    retries 3",  # connection failures only: a request that reached an app is never sent twice
        "",
    ]


def _frontend(layout: Layout) -> list[str]:
    cookies = "|".join(layout.platform_cookies)  # letters, digits, _ and - only: literal in a regex
    prefix = layout.token_prefix
    host = f"""'req.hdr(host),lower,regsub(":[0-9]+$",),map_str("{layout.hosts_map}")'"""
    return [
        "frontend site",
        f"    bind {layout.bind_host}:{layout.bind_port}",
        "    unique-id-format %[var(txn.fb)]",  # what the slot's Python backup needs back (see _fallback)
        "    http-request deny deny_status 400 if { req.hdr_cnt(host) gt 1 }",
        # X-Forwarded-For: the client's chain plus the peer, as forward.py; Proto as uvicorn trusts it
        "    http-request set-header X-Forwarded-For '%[req.fhdr(x-forwarded-for)], %[src]'"
        " if { req.fhdr(x-forwarded-for) -m found }",
        "    http-request set-header X-Forwarded-For %[src] unless { req.fhdr(x-forwarded-for) -m found }",
        "    http-request set-header X-Forwarded-Proto http"
        " unless { src 127.0.0.1 } { req.hdr(x-forwarded-proto) -m str http https }",
        # the route: host -> SLOT|MODE|BASE|ORIGIN|ACCESS; the platform's own paths on an app host stay in Python
        f"    http-request set-var(txn.route) {host}",
        "    http-request unset-var(txn.route) if { path /__spaceport__/status /__spaceport__/auth }",
        "    acl app var(txn.route) -m found",
        *_path_route(layout),
        *_one_space_per_connection(),
        *_private_access(layout),
        "    http-request set-var(txn.slot) var(txn.route),field(1,|) if app",
        "    http-request set-var(txn.mode) var(txn.route),field(2,|) if app",
        "    http-request set-var(txn.base) var(txn.route),field(3,|) if app",
        "    http-request set-var(txn.origin) var(txn.route),field(4,|) if app",
        *_header_vars(),
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)] if app",
        "    http-request lua.spaceport_hop if app"
        " { req.fhdr(connection) -m reg -i '(^|,)\\s*(?!(keep-alive|close|upgrade)\\s*(,|$))[^,\\s]' }",
        "    http-request del-header X-IP-Token if app",  # ZeroGPU's visitor token: only Python signs it
        # the platform's credentials never reach an app (forward.upstream_headers)
        *_strip_cookies(cookies),
        *_strip_tokens("authorization", prefix),
        *_strip_tokens("x-hf-authorization", prefix),
        *_upstream_path(),
        # responses: no platform cookie set by an app; the app's internal origin never leaks in Location
        f"    http-response lua.spaceport_cookies {cookies} if {{ var(txn.route) -m found }}"
        f" {{ res.hdr(set-cookie) -m reg -i '^\\s*(__host-|__secure-)?({cookies})\\s*(=|;|$)' }}",
        """    http-response set-var(txn.lorigin) 'res.fhdr(location),regsub("^(https?://[^/?#]*).*$","\\1")'"""
        " if { var(txn.route) -m found } { res.fhdr(location) -m found }",
        # exactly _location_rewriter: the origin alone or followed by `/` or `?` (`/` if nothing is left)
        "    acl internal_origin var(txn.lorigin),strcmp(txn.origin) eq 0",
        "    http-response replace-header Location '^https?://[^/?#]*(.*)$' '\\1'"
        " if { var(txn.route) -m found } internal_origin !{ res.fhdr(location) -m reg '^https?://[^/?#]*#' }",
        "    http-response set-header Location / if { var(txn.route) -m found } internal_origin"
        " { res.fhdr(location) -m len 0 }",
        *_path_responses(),
        *_response_headers(layout),
        "    use_backend %[var(txn.slot)] if app",
        f"    default_backend {PYTHON_BACKEND}",
        "",
    ]


def _one_space_per_connection() -> list[str]:
    """A visitor's connection reaches through HAProxy only the first space it was routed to; requests for
    any other space on it go to Python (which proxies them on connections of its own).

    `http-reuse never` keeps each visitor's upstream connections attached to its session, and HAProxy 2.6
    finds them again by the server's address in memory. `del server` does not count these idle
    connections: once a server is deleted, the next server added can take its memory, and the session
    then sends that server's requests down its old connection, to the deleted server's app (186 of 200
    tries on 2.6.12: tests/dataplane/test_haproxy.py). Within one space this is harmless (the old
    connection is to an instance of the same space, closed when the instance stops, and a server reused
    while it lives is never its own space's: a redeploy adds the new server before the old one goes).
    Browsers open one connection per host, so a host URL's visitors never meet this rule; a client that
    mixes Host headers on one connection, or path URLs of several spaces on a trusted site, gets the
    second and later spaces through Python. BASE (`/apps/owner/name`) names the space."""
    return [
        "    http-request set-var(sess.space) var(txn.route),field(3,|) if app !{ var(sess.space) -m found }",
        "    http-request set-var(txn.space) var(txn.route),field(3,|) if app",
        "    http-request unset-var(txn.route) if app !{ var(txn.space),strcmp(sess.space) eq 0 }",
    ]


def _path_route(layout: Layout) -> list[str]:
    """A path URL (`/apps/OWNER/NAME/...`) on a host that is not an app host (ProxyMiddleware.resolve: the
    host name before the last `:`, unless it ends with `]`, is not `LABEL.APPS_DOMAIN`): paths.map by the
    prefix in lower case (RouteTable.by_space), except the waking page's status. `txn.phead` keeps the
    prefix as requested, `txn.fb` what the Python backup needs to rebuild the visitor's path."""
    domain = layout.apps_domain.replace(".", "\\.")
    paths = f'map_str("{layout.paths_map}")'
    shape = "{ path -m reg ^/apps/[^/]+/[^/]+/ }"
    return [
        f"    acl app_host req.hdr(host),lower -m reg '^[^.:]+\\.{domain}$' '^[^.]+\\.{domain}:([^:]*[^:\\]])?$'",
        """    http-request set-var(txn.phead) 'path,regsub("^(/apps/[^/]+/[^/]+)/.*$","\\1")'"""
        f" if !app !app_host {shape}",
        f"    http-request set-var(txn.route) var(txn.phead),lower,{paths} if {{ var(txn.phead) -m found }}",
        "    http-request unset-var(txn.route) if { var(txn.phead) -m found }"
        " { path -m reg ^/apps/[^/]+/[^/]+/__spaceport__/status$ }",
        "    acl pathed var(txn.phead) -m found",
        "    http-request set-var-fmt(txn.pheads) %[var(txn.phead)]/ if app pathed",
        "    http-request set-var-fmt(txn.fb) %[var(txn.route),field(2,|),bytes(0,1)]%[var(txn.phead)] if app pathed",
    ]


def _upstream_path() -> list[str]:
    """middleware.upstream_path: a host URL under the base path is stripped (Gradio) / gets it prepended
    otherwise (Streamlit); a path URL loses its prefix (strip) or gets the route's own base (keep)."""
    strip, keep = "{ var(txn.mode) -m str strip }", "{ var(txn.mode) -m str keep }"
    rest = 'path,regsub("^/[^/]*/[^/]*/[^/]*",)'
    return [
        "    http-request set-uri %[pathq] if app !{ url_beg / }",  # an absolute-form target: origin-form, as Python
        """    http-request set-var(txn.head) 'path,regsub("^(/[^/]*/[^/]*/[^/]*).*$","\\1")' if app"""
        " { path_beg /apps/ }",
        "    acl under_base var(txn.head),strcmp(txn.base) eq 0",
        """    http-request set-path '%[path,regsub("^/[^/]*/[^/]*/[^/]*/?","/")]' if app under_base"""
        f" {strip} || app pathed {strip}",
        f"    http-request set-path %[var(txn.base)]%[path] if app !under_base !pathed {keep}",
        f"    http-request set-path '%[var(txn.base)]%[{rest}]' if app !under_base pathed {keep}",
    ]


def _path_responses() -> list[str]:
    """isolation.response_filter on the platform's origin, and _location_rewriter's prefix for strip routes
    (a path Location not already under the prefix as requested gets it; not on Python's own answers)."""
    pathed = "{ var(txn.phead) -m found } { var(txn.route) -m found }"
    lhead = """'res.fhdr(location),regsub("^(/[^/]*/[^/]*/[^/]*/).*$","\\1")'"""
    return [
        f"    http-response del-header Service-Worker-Allowed if {pathed}",
        f"    http-response del-header Clear-Site-Data if {pathed}",
        f"    http-response set-var(txn.lhead) {lhead} if {pathed} {{ res.fhdr(location) -m found }}",
        "    http-response replace-header Location '^(.*)$' '%[var(txn.phead)]\\1'"
        f" if {pathed} {{ var(txn.mode) -m str strip }} {{ res.fhdr(location) -m reg ^/([^/]|$) }}"
        " !{ var(txn.lhead),strcmp(txn.pheads) eq 0 } !{ srv_name -m str " + PYTHON_BACKUP + " }",
    ]


def _header_vars() -> list[str]:
    """The route's README header fields, read at request time (the map changes without a reload)."""
    fields = [*HEADER_FIELDS, "embed"]
    return [f"    http-request set-var(txn.h{FIRST_HEADER_FIELD + n}) var(txn.route),field({FIRST_HEADER_FIELD + n},|) if app"
            for n in range(len(fields))]


def _response_headers(layout: Layout) -> list[str]:
    """isolation.route_headers on the instance's own answers: only spec values (listed here) are written."""
    first = FIRST_HEADER_FIELD
    lines = [
        f"    acl by_backup srv_name -m str {PYTHON_BACKUP}",
        "    acl upgraded status 101",
    ]
    for n, name in enumerate(HEADER_FIELDS):
        var = f"txn.h{first + n}"
        values = " ".join(sorted(ALLOWED[name]))
        lines.append(f"    http-response set-header {name} %[var({var})]"
                     f" if {{ var({var}) -m str {values} }} !by_backup !upgraded")
    if layout.frame_ancestors:
        embed = f"txn.h{first + len(HEADER_FIELDS)}"
        lines.append(f'    http-response add-header content-security-policy "{layout.frame_ancestors}"'
                     f" if {{ var({embed}) -m str no }} !by_backup !upgraded")
    return lines


def _private_access(layout: Layout) -> list[str]:
    """ACCESS is `public` or a private space's id: then only a valid app cookie for that space (HS256,
    signed with the site's secret, unexpired) keeps the route; anything else goes to Python (the sign-in
    bridge, a token's access check). Without a secret every private route goes to Python."""
    jwt = "var(txn.appjwt)"
    lines = [
        "    http-request set-var(txn.access) var(txn.route),field(5,|) if app",
        "    acl public_route var(txn.access) -m str public",
    ]
    if not layout.app_cookie_secret:
        return [*lines, "    http-request unset-var(txn.route) if app !public_route"]
    checks = {
        "jwt_alg": f"{jwt},jwt_header_query('$.alg') -m str HS256",
        "jwt_sig": f'{jwt},jwt_verify("HS256","{layout.app_cookie_secret}") -m int 1',
        "jwt_space": "var(txn.jwt_space),strcmp(txn.access) eq 0",
        "jwt_fresh": "var(txn.jwt_exp),sub(txn.now) gt 0",
    }
    failed = " || ".join(f"app !public_route !{name}" for name in checks)
    return [
        *lines,
        f"    http-request set-var(txn.appjwt) req.cook({layout.app_cookie}) if app !public_route",
        f"    http-request set-var(txn.jwt_space) {jwt},jwt_payload_query('$.s') if app !public_route",
        f"    http-request set-var(txn.jwt_exp) {jwt},jwt_payload_query('$.exp','int') if app !public_route",
        "    http-request set-var(txn.now) date if app !public_route",
        *[f"    acl {name} {test}" for name, test in checks.items()],
        f"    http-request unset-var(txn.route) if {failed}",
    ]


def _strip_cookies(names: str) -> list[str]:
    """Drop each platform cookie from Cookie (a few passes, then refuse what is left: fail closed)."""
    one = f"'^(.*?)(^|;)\\s*({names})=[^;]*(.*)$' '\\1\\4'"
    has = f"{{ req.fhdr(cookie) -m reg '(^|;)\\s*({names})=' }}"
    return [
        *[f"    http-request replace-header Cookie {one} if app {has}"] * 4,
        "    http-request replace-header Cookie '^[;\\s]*(.*?)[;\\s]*$' '\\1' if app",
        "    http-request del-header Cookie if app { req.fhdr(cookie) -m reg '^[;\\s]*$' }",
        f"    http-request deny deny_status 400 if app {has}",
    ]


def _strip_tokens(header: str, prefix: str) -> list[str]:
    """forward.is_platform_credential: Bearer PREFIX..., Basic base64(user:PREFIX...), PREFIX in any other."""
    value = f"req.fhdr({header})"
    basic = f"""'{value},regsub("^\\s*[Bb][Aa][Ss][Ii][Cc]\\s+",),b64dec'"""
    return [
        f"    http-request del-header {header} if app {{ req.hdr_cnt({header}) gt 1 }}",
        f"    http-request del-header {header} if app {{ {value} -m reg -i '^\\s*bearer\\s+{prefix}' }}",
        f"    http-request del-header {header} if app {{ {basic} -m reg '^[^:]*:{prefix}' }}",
        f"    http-request del-header {header} if app !{{ {value} -m reg -i '^\\s*(bearer|basic)\\s' }}"
        f" {{ {value} -m sub {prefix} }}",
    ]


def _backends(layout: Layout) -> list[str]:
    lines = [
        f"backend {PYTHON_BACKEND}",
        f"    server app 127.0.0.1:{layout.python_port}",
        "",
    ]
    # a slot's instance that refuses a connection is marked down at once (its requests then retry on
    # the backup, Python, which knows the route's news: the activator, the paused or error page)
    fallback = (f'    server {PYTHON_BACKUP} "unix@{layout.fallback}" send-proxy-v2 proxy-v2-options unique-id'
                " backup")
    for n in range(1, layout.slots + 1):
        lines += [f"backend {SLOT_PREFIX}{n}", "    balance roundrobin", "    option redispatch 1", fallback, ""]
    return [*lines, *_fallback(layout)]


def _fallback(layout: Layout) -> list[str]:
    """Where a slot's backup goes: to Python with the path the visitor asked for. A path URL's request was
    rewritten for the app (`/x`, or the route's base); its unique id (`txn.fb`: the mode's letter and the
    prefix as requested) puts the prefix back. A host URL's request goes on as it is (Python takes both)."""
    unique = "fc_pp_unique_id"
    return [
        "frontend fallback",
        f'    bind "unix@{layout.fallback}" mode 600 accept-proxy',
        f"""    http-request set-path '%[{unique},bytes(1)]%[path]' if {{ {unique} -m reg ^s/ }}""",
        f"""    http-request set-path '%[{unique},bytes(1)]%[path,regsub("^/[^/]*/[^/]*/[^/]*",)]'"""
        f" if {{ {unique} -m reg ^k/ }}",
        f"    default_backend {PYTHON_BACKEND}",
        "",
    ]


# ---- the runtime API ------------------------------------------------------------------------------
class RuntimeAPI:
    """One command per connection on the admin socket (each answer is read to its end)."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path, self.timeout = path, timeout

    def command(self, line: str) -> str:
        if "\n" in line or "\r" in line or ";" in line:
            raise DataPlaneError(f"refusing a runtime command with a separator in it: {line!r}")
        return self._send(line)

    def _send(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def batch(self, steps: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
        """Run several commands in one round trip (`a; b; c`); raise at the first answer not in its `ok`
        (an empty `ok` takes any answer).

        Each answer ends with an empty line (an empty answer is just that line). HAProxy runs them all
        in order whatever the answers, so callers put the step that must not happen early last."""
        lines = [line for line, _ in steps]
        for line in lines:
            if "\n" in line or "\r" in line or ";" in line:
                raise DataPlaneError(f"refusing a runtime command with a separator in it: {line!r}")
        answers, current = [], []
        for text in self._send("; ".join(lines)).split("\n"):
            if text:
                current.append(text)
            else:
                answers.append("\n".join(current))
                current = []
        for (line, ok), answer in zip(steps, answers + [""] * len(steps), strict=False):
            if ok and not any(answer.startswith(o) if o else not answer for o in ok):
                raise DataPlaneError(f"HAProxy refused {line!r}: {answer}")
        return answers[: len(steps)]

    def expect(self, line: str, ok: tuple[str, ...] = ("",)) -> str:
        """Run `line`; raise unless its answer (stripped) starts with one of `ok` ("" = empty answer)."""
        answer = self.command(line).strip()
        if not any(answer.startswith(o) if o else not answer for o in ok):
            raise DataPlaneError(f"HAProxy refused {line!r}: {answer}")
        return answer

    def map_id(self, path: Path) -> str:
        """The `#ID` of a loaded map file (paths may hold spaces; IDs never do)."""
        for line in self.command("show map").splitlines():
            ident, _, rest = line.partition(" ")
            if rest.startswith(f"({path})") and ident.isdigit():
                return f"#{ident}"
        raise DataPlaneError(f"HAProxy has not loaded the map {path}")

    def server_stats(self) -> list[dict[str, str]]:
        """`show stat` for servers only: one dict per server (pxname, svname, scur, stot, bin, bout, ...)."""
        text = self.command("show stat -1 4 -1")
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines or not lines[0].startswith("# "):
            return []
        header = lines[0][2:].split(",")
        return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# ---- the process ------------------------------------------------------------------------------------
class HAProxyProcess:
    """HAProxy in the foreground as a child of this process, with its config in `layout.run_dir`."""

    def __init__(self, layout: Layout, binary: str = HAPROXY, *, quiet: bool = False) -> None:
        self.layout, self.binary, self.quiet = layout, binary, quiet  # quiet: no notices on stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = RuntimeAPI(layout.socket)

    def write_files(self) -> None:
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        self.layout.run_dir.chmod(0o700)
        self.layout.config.write_text(render_config(self.layout))
        self.layout.hosts_map.write_text("")  # routes are added at run time
        self.layout.paths_map.write_text("")
        self.layout.lua.write_text(LUA)

    def start(self, timeout: float = 10.0) -> None:
        self.write_files()
        with contextlib.suppress(FileNotFoundError):
            self.layout.socket.unlink()
        check = subprocess.run([self.binary, "-c", "-f", str(self.layout.config)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise DataPlaneError(f"HAProxy rejected its config: {check.stderr.strip() or check.stdout.strip()}")
        # in serve's process group (a killpg ends it too) and told to stop if serve dies (PDEATHSIG)
        self.proc = subprocess.Popen([self.binary, "-db", *(["-q"] if self.quiet else []), "-f", str(self.layout.config)],
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DataPlaneError(f"HAProxy exited at start (code {self.proc.returncode}); is the port taken?")
            with contextlib.suppress(OSError):
                self.api.command("show info")
                return
            time.sleep(0.02)
        self.stop()
        raise DataPlaneError("HAProxy did not open its stats socket in time")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
