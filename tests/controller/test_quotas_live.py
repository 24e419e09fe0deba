"""Accelerator quotas end to end on the local runtime (no GPU needed: the app only sees its env)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from controller.config import Settings
from controller.db.models import utcnow
from controller.services.platform import Platform
from controller.services.sleep import sweep
from tests.support.server import LiveServer, make_server
from tests.support.spaces import push_fixture, wait_stage

ENV_APP = """
import http.server, json, os
KEYS = ("CUDA_VISIBLE_DEVICES", "ACCELERATOR", "SPACE_ID")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k: os.environ.get(k) for k in KEYS}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer((os.environ["GRADIO_SERVER_NAME"], int(os.environ["GRADIO_SERVER_PORT"])), Handler).serve_forever()
"""
FILES = {"README.md": "---\nsdk: gradio\nstartup_duration_timeout: 2m\n---\n", "app.py": ENV_APP}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("quotas")).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    made = {name: server.create_user(name) for name in ("alice", "bob")}
    made["admin"] = server.create_user("root", admin=True)
    return made


def app_env(server: LiveServer, slug: str) -> dict[str, str]:
    response = httpx.get(f"{server.url}/", headers={"Host": f"{slug}.localhost:{server.port}"}, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def admin(server: LiveServer, token: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/admin/{path}", json=body, headers={"authorization": f"Bearer {token}"})


def test_quota_refusal_then_sleep_frees_the_device_for_another_owner(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    alice = HfApi(endpoint=server.url, token=tokens["alice"])
    bob = HfApi(endpoint=server.url, token=tokens["bob"])
    push_fixture(server, tmp_path, FILES, "alice", "gpu", tokens["alice"])
    push_fixture(server, tmp_path, FILES, "bob", "gpu", tokens["bob"])
    wait_stage(server, "alice/gpu", {"RUNNING"})
    wait_stage(server, "bob/gpu", {"RUNNING"})

    with pytest.raises(HfHubHTTPError) as refused:  # default quota is 0 GPUs
        alice.request_space_hardware("alice/gpu", "t4-small")
    assert refused.value.response.status_code == 403
    assert "alice's quota for nvidia-t4 is 0 devices" in refused.value.response.json()["error"]
    assert admin(server, tokens["alice"], "quotas", {"owner": "alice", "accelerator": "nvidia-t4", "limit": 1}).status_code == 403

    assert admin(server, tokens["admin"], "accelerators", {"accelerator": "nvidia-t4", "count": 1}).status_code == 200
    for owner in ("alice", "bob"):
        assert admin(server, tokens["admin"], "quotas", {"owner": owner, "accelerator": "nvidia-t4", "limit": 1}).status_code == 200

    alice.request_space_hardware("alice/gpu", "t4-small")
    wait_stage(server, "alice/gpu", {"RUNNING"})
    env = app_env(server, "alice-gpu")
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["ACCELERATOR"] == "nvidia-t4"
    assert alice.get_space_runtime("alice/gpu").hardware == "t4-small"

    with pytest.raises(HfHubHTTPError) as busy:
        bob.request_space_hardware("bob/gpu", "t4-small")
    assert busy.value.response.status_code == 409
    assert "held by alice/gpu" in busy.value.response.json()["error"]

    alice.set_space_sleep_time("alice/gpu", 3600)  # GPU flavors never sleep unless told (like HF)
    assert alice.get_space_runtime("alice/gpu").sleep_time == 3600
    platform = Platform(Settings(data_dir=server.data_dir))
    try:
        assert sweep(platform, now=utcnow() + timedelta(hours=2)) >= 1  # accelerated flavors sleep deeply at once
    finally:
        platform.dispose()
    wait_stage(server, "alice/gpu", {"SLEEPING"})
    held = httpx.get(f"{server.url}/api/admin/accelerators", headers={"authorization": f"Bearer {tokens['admin']}"}).json()
    assert [d["holder"] for d in held["devices"]] == [None]

    bob.request_space_hardware("bob/gpu", "t4-small")
    wait_stage(server, "bob/gpu", {"RUNNING"})
    assert app_env(server, "bob-gpu")["CUDA_VISIBLE_DEVICES"] == "0"

    woken = httpx.get(f"{server.url}/", headers={"Host": f"alice-gpu.localhost:{server.port}"}, timeout=60)
    assert woken.status_code == 503
    assert "no free nvidia-t4" in woken.text and "bob/gpu" in woken.text
