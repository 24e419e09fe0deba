"""Apps' egress (issue 18 item 7): private, CGNAT, link-local and ULA destinations are denied by default, an
allow-listed CIDR is reachable, DNS works through the configured resolver; local (bwrap) and docker runtimes.

Every target is on this machine: a network namespace ("sp18-egress-target", veth `egt0h`/`egt0c`) holding
10.99.0.2 (private), 100.64.0.2 (CGNAT), 10.98.7.2 (allow-listed) and fd00:99::2 (ULA) with a listener on
each, reached through the host's forwarding path exactly like a remote host would be; and the host's own
link-local IPv6 address on the app's veth. Nothing is sent to any real private address.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import uv

from builder.artifact import ImageArtifact, VenvArtifact
from controller.runtimes import netns
from controller.runtimes.base import Endpoint, HardwareSpec, InstanceSpec
from controller.runtimes.health import wait_healthy
from controller.runtimes.local import LocalRuntime
from controller.runtimes.sandbox import sandbox_status
from tests.support.tiers import missing

HARDWARE = HardwareSpec(cpu=1.0, memory_mb=256, pids=64, disk_mb=64)
TARGET_NS = "sp18-egress-target"
HOST_IF, TARGET_IF = "egt0h", "egt0c"
PAIRS = (("10.99.0.1", "10.99.0.2", 24), ("100.64.0.1", "100.64.0.2", 24), ("10.98.7.1", "10.98.7.2", 24),
         ("fd00:99::1", "fd00:99::2", 64))  # fmt: skip
ALLOWED = "10.98.7.0/24"
PORT = 8099
PROBE_IMAGE = "spaceport-test/egress-probe:1"
# GET /probe?to=HOST:PORT -> {"ok": bool, "detail": ...}: connects and reads the target's banner.
# GET /dns?name=NAME -> {"ok": bool, "detail": ...}.
PROBE_APP = textwrap.dedent("""\
    import json, os, socket, urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def probe(to):
        host, _, port = to.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=3) as conn:
                return {"ok": True, "detail": conn.recv(64).decode(errors="replace")}
        except OSError as exc:
            return {"ok": False, "detail": repr(exc)}

    def dns(name):
        try:
            return {"ok": True, "detail": sorted({a[4][0] for a in socket.getaddrinfo(name, 443)})}
        except OSError as exc:
            return {"ok": False, "detail": repr(exc)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            result = probe(query["to"]) if url.path == "/probe" else dns(query["name"]) if url.path == "/dns" else {}
            body = json.dumps(result).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "7860"))), Handler).serve_forever()
""")
# Inside the target namespace: answers "target-ok" on every address (IPv4 and IPv6).
TARGET_SERVER = textwrap.dedent(f"""\
    import socket, threading
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", {PORT}))
    s.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = s.accept()
        conn.sendall(b"target-ok")
        conn.close()
""")


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def _teardown_target() -> None:
    _sh("ip", "link", "del", HOST_IF, check=False)
    _sh("ip", "netns", "del", TARGET_NS, check=False)


@pytest.fixture(scope="module")
def target() -> Iterator[None]:
    """Private/CGNAT/ULA hosts on this machine (their own namespace), all serving PORT."""
    if _sh("id", "-u").stdout.strip() != "0":
        missing("egress tests need root (network namespaces)")
    _teardown_target()
    _sh("ip", "netns", "add", TARGET_NS)
    _sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", TARGET_IF)
    _sh("ip", "link", "set", TARGET_IF, "netns", TARGET_NS)
    inside = ("ip", "-n", TARGET_NS)
    for host_ip, target_ip, bits in PAIRS:
        flags = ["nodad"] if ":" in host_ip else []
        _sh("ip", "addr", "add", f"{host_ip}/{bits}", "dev", HOST_IF, *flags)
        _sh(*inside, "addr", "add", f"{target_ip}/{bits}", "dev", TARGET_IF, *flags)
    _sh("ip", "link", "set", HOST_IF, "up")
    _sh(*inside, "link", "set", TARGET_IF, "up")
    _sh(*inside, "link", "set", "lo", "up")
    _sh(*inside, "route", "add", "default", "via", "10.99.0.1")
    server = subprocess.Popen(["ip", "netns", "exec", TARGET_NS, sys.executable, "-c", TARGET_SERVER],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield
    finally:
        server.kill()
        server.wait()
        _teardown_target()


@pytest.fixture
async def host_v6_listener() -> AsyncIterator[int]:
    """A host service on every IPv6 address (as a controller bound to [::] would be)."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"host-ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(accept, "::", 0, family=socket.AF_INET6)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def host_v4_listener() -> AsyncIterator[int]:
    """A host service on every IPv4 address (the controller's internal endpoints, a database...)."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"host-ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(accept, "0.0.0.0", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def ask(endpoint: Endpoint, path: str) -> dict[str, object]:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
                session.get(endpoint.url + path) as response):  # fmt: skip
        return dict(json.loads(await response.text()))


def eui64_link_local(mac: str) -> str:
    """The kernel's default (EUI-64) link-local address for an interface with this MAC."""
    parts = [int(b, 16) for b in mac.split(":")]
    parts[0] ^= 0x02
    eui = [*parts[:3], 0xFF, 0xFE, *parts[3:]]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)


async def assert_policy(endpoint: Endpoint, extra_blocked: tuple[str, ...] = ()) -> None:
    blocked = [f"10.99.0.2:{PORT}", f"100.64.0.2:{PORT}", f"[fd00:99::2]:{PORT}", *extra_blocked]
    results = {to: await ask(endpoint, f"/probe?to={to}") for to in [*blocked, f"10.98.7.2:{PORT}"]}
    reached = {to: r for to, r in results.items() if to in blocked and r["ok"]}
    assert not reached, f"the app reached denied destinations: {reached}"
    allowed = results[f"10.98.7.2:{PORT}"]
    assert allowed == {"ok": True, "detail": "target-ok"}, f"the allow-listed host is unreachable: {allowed}"


async def test_local_app_cannot_reach_private_cgnat_ula_or_host_link_local(target: None, tmp_path: Path,
                                                                           host_v6_listener: int) -> None:  # fmt: skip
    status = sandbox_status()
    if not status.available:
        missing(f"sandbox unavailable: {status.reason}")
    src = tmp_path / "probe"
    src.mkdir()
    (src / "app.py").write_text(PROBE_APP)
    venv = tmp_path / "venv"
    subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", "/usr/bin/python3", str(venv)], check=True)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else path.stat().st_mode | 0o644)
    for parent in tmp_path.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        parent.chmod(parent.stat().st_mode | 0o755)
    runtime = LocalRuntime(tmp_path / "state", sandbox="bwrap", egress_allow=ALLOWED)
    spec = InstanceSpec(name="probe", space_id="mallory/probe", hardware=HARDWARE,
                        artifact=VenvArtifact(venv, src, ("python", "app.py"), 7860))  # fmt: skip
    try:
        endpoint = await runtime.start(spec)
        assert await wait_healthy(endpoint, timeout=60), (await runtime.status("probe")).message
        record = runtime._dir("probe").read()
        assert record is not None and record.slot is not None
        slot = netns.Slot(record.slot)
        mac = Path(f"/sys/class/net/{slot.host_if}/address").read_text().strip()
        host_link_local = f"[{eui64_link_local(mac)}%{slot.app_if}]:{host_v6_listener}"
        await assert_policy(endpoint, (host_link_local,))
        resolved = await ask(endpoint, "/dns?name=pypi.org")  # the resolver may sit in a denied range
        assert resolved["ok"], f"DNS through the configured resolver must keep working: {resolved}"
    finally:
        await runtime.remove("probe")


def test_firewall_upgrade_is_idempotent_and_denies_every_non_public_range() -> None:
    if not sandbox_status().available:
        missing("needs root and iptables")
    netns.ensure_firewall()
    first = _sh("iptables", "-w", "-S", netns.FWD_CHAIN).stdout
    netns.ensure_firewall()
    assert _sh("iptables", "-w", "-S", netns.FWD_CHAIN).stdout == first
    for cidr in ("10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
                 "224.0.0.0/4", "240.0.0.0/4"):  # fmt: skip
        assert f"-A {netns.FWD_CHAIN} -d {cidr} -i spx+ -j DROP" in first, cidr
    v4, _ = netns.resolvers()
    for resolver in v4:  # DNS to exactly the configured resolvers, port 53 only
        assert f"-d {resolver}/32 -i spx+ -p udp -m udp --dport 53 -j ACCEPT" in first
        assert first.count(f"-d {resolver}/32") == 2
    inp = _sh("iptables", "-w", "-S", "INPUT").stdout
    assert inp.count(f"-i spx+ -j {netns.IN_CHAIN}") == 1
    six = _sh("ip6tables", "-w", "-S", netns.FWD_CHAIN).stdout
    for cidr in ("fc00::/7", "fe80::/10", "::1/128"):
        assert f"-d {cidr} -i spx+ -j DROP" in six, cidr
    assert _sh("ip6tables", "-w", "-S", "INPUT").stdout.count(f"-i spx+ -j {netns.IN_CHAIN}") == 1


# ---------------------------------------------------------------- docker runtime
def _probe_image(docker_host: str) -> str:
    import docker

    from tests.support.images import ensure_base_images

    ensure_base_images(docker_host)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = b'FROM spaceport/base-python:3.11\nCOPY app.py /app/app.py\nCMD ["python3", "/app/app.py"]\n'
        for name, data in (("Dockerfile", dockerfile), ("app.py", PROBE_APP.encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client = docker.DockerClient(base_url=docker_host, timeout=300)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=PROBE_IMAGE, rm=True)
    finally:
        client.close()
    return PROBE_IMAGE


async def test_docker_app_cannot_reach_private_or_cgnat_ranges(target: None, docker_host: str,
                                                               host_v4_listener: int) -> None:  # fmt: skip
    from controller.runtimes.docker import DockerRuntime

    image = _probe_image(docker_host)
    runtime = DockerRuntime(docker_host, network="spaceport-egress-test", site="egress", egress_allow=ALLOWED)
    spec = InstanceSpec(name="probe", space_id="mallory/probe", hardware=HARDWARE,
                        artifact=ImageArtifact(image=image, port=7860))  # fmt: skip
    try:
        endpoint = await runtime.start(spec)
        if "NOT enforced" in runtime.egress_policy:
            missing(f"the docker engine is not on this machine: {runtime.egress_policy}")
        assert await wait_healthy(endpoint, timeout=60), (await runtime.status("probe")).message
        gateway = runtime.client.networks.get("spaceport-egress-test").attrs["IPAM"]["Config"][0]["Gateway"]
        await assert_policy(endpoint, (f"{gateway}:{host_v4_listener}",))  # the host itself
        resolved = await ask(endpoint, "/dns?name=pypi.org")
        assert resolved["ok"], f"DNS must keep working in containers: {resolved}"
    finally:
        await runtime.remove("probe")
        with contextlib.suppress(Exception):
            runtime.client.networks.get("spaceport-egress-test").remove()
        runtime.close()
