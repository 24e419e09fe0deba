"""The suite's Chromium loads pages whole while the host's interfaces change (support/nonetlink.py).

Without the filter, this test's loads saw 150 of their requests fail with net::ERR_NETWORK_CHANGED;
stop 34's CI lost an OAuth browser test to it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import sync_playwright

from tests.support.browser import CHROMIUM_ARGS

pytestmark = pytest.mark.browser
ASSETS = 60
VETH = "spnlt0h"


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            body = "".join(f'<script src="/a{i}.js"></script>' for i in range(ASSETS)) + "<p>done</p>"
            kind = "text/html"
        else:
            time.sleep(0.03)  # keep requests in flight while an address changes
            body, kind = "var x = 1;", "application/javascript"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def churn() -> Iterator[list[int]]:
    """Add and remove a veth with an address every 0.1 s, as sandboxed instances do; yields the count."""
    done, count = threading.Event(), [0]

    def run(*args: str) -> None:
        subprocess.run(["ip", *args], capture_output=True, check=False)

    def loop() -> None:
        while not done.is_set():
            run("link", "add", VETH, "type", "veth", "peer", "name", "spnlt0c")
            run("addr", "add", "10.233.0.1/30", "dev", VETH)
            run("link", "set", VETH, "up")
            done.wait(0.1)
            run("link", "del", VETH)
            count[0] += 1
            done.wait(0.1)

    if subprocess.run(["ip", "link", "add", VETH, "type", "veth", "peer", "name", "spnlt0c"],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot add a veth pair here (not root?)")
    subprocess.run(["ip", "link", "del", VETH], capture_output=True, check=False)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield count
    done.set()
    thread.join()


def test_pages_load_whole_while_the_hosts_interfaces_change(chromium_path: str, site: int,
                                                             churn: list[int]) -> None:
    failed: list[str] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = chromium.new_page()
        page.on("requestfailed", lambda request: failed.append(f"{request.url}: {request.failure}"))
        loads = 0
        while loads < 3 or churn[0] < 3:  # at least three loads across at least three changes
            page.goto(f"http://app.localhost:{site}/", wait_until="load")
            loads += 1
        chromium.close()
    assert failed == []
