"""A space on a zero-* flavor routes through the Python proxy (it signs the visitor's X-IP-Token), never HAProxy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.dataplane.plane import mapping_of
from controller.domain.hardware import load_catalog
from controller.services import routing
from controller.services.instances import InstanceRow, SpaceSnapshot


def snapshot(hardware: str) -> SpaceSnapshot:
    row = InstanceRow(name="i1", build_id=1, generation=1, state="ready", endpoint="http://127.0.0.1:7001", restarts=0,
                      next_restart_at=None, ready_at=datetime.now(UTC), message=None)
    return SpaceSnapshot(
        pk=1, space_id="carol/zero", owner="carol", name="zero", slug="carol-zero", private=False, sdk="gradio",
        desired="running", stage="RUNNING", error_message=None, hardware=hardware, current_hardware=hardware,
        created_at=datetime.now(UTC), generation=1, head_sha="a" * 40, target_build_id=1, wanted="i1",
        health_path="/", startup_timeout=60.0, headers=(), embeddable=True, observed_build=(True, "succeeded", None, None), instances=(row,))


@pytest.mark.parametrize(("hardware", "visitor_token"), [("zero-a10g", True), ("zero-t4", True), ("cpu-basic", False)])
def test_zero_flavors_stay_on_the_python_proxy(hardware: str, visitor_token: bool) -> None:
    route = routing.derive(snapshot(hardware), load_catalog()).route
    assert route.state == "ready" and route.visitor_token is visitor_token
    assert (mapping_of(route, "apps.example") is None) is visitor_token
