"""The admin's ZeroGPU page (issue 15): devices and who holds them, GPU seconds per day, today's usage,
recent leases; admins only; what visitors and apps put in a lease (their address, a space's name) is
escaped. Lease rows are written straight into the live server's database (the device API that writes
them in production is tested in tests/zerogpu/)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from tests.web.conftest import Site, post_form

UUID = "GPU-00000000-0000-4000-8000-0000000000ad"


def _leases(site: Site) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(site.server.data_dir / "spaceport.db") as db:
        space = db.execute("SELECT id FROM spaces WHERE name = 'zgdemo'").fetchone()[0]
        alice = db.execute("SELECT id FROM accounts WHERE name = 'alice'").fetchone()[0]
        rows = [("t1", f"user:{alice}", alice, 2.5, "released", now), ("t2", "ip:<script>alert(1)</script>", None, 1.0,
                "released", now), ("t3", f"user:{alice}", alice, 0.0, "granted", None)]
        db.executemany("INSERT INTO zerogpu_leases (token_hash, space_id, instance, device_uuid, subject, user_id, duration, "
                       "granted_at, released_at, charged_seconds, outcome) VALUES (?, ?, 'sp-x-1', ?, ?, ?, 5, ?, ?, ?, ?)",
                       [(t, space, UUID, subject, uid, now, released, charged, outcome)
                        for t, subject, uid, charged, outcome, released in rows])


def test_zerogpu_page_shows_pool_holders_quotas_and_usage_to_admins_only(site: Site) -> None:
    site.server.cli("zerogpu", "add-device", "nvidia-a10g", "--index", "0", "--uuid", UUID)
    site.server.cli("zerogpu", "defaults", "--anonymous", "30", "--signed-in", "200")
    site.server.cli("zerogpu", "quota", "alice", "900")
    with site.client("alice") as alice:
        made = post_form(alice, "/new", "/new", {"owner": "alice", "name": "zgdemo", "sdk": "static",
                                                 "hardware": "cpu-basic", "visibility": "public"})
        assert made.status_code == 303
    _leases(site)
    for role in (None, "bob", "alice"):
        with site.client(role) as client:
            assert client.get("/admin/zerogpu").status_code in (303, 401, 403, 404), role
    with site.client("root") as root:
        assert 'href="/admin/zerogpu"' in root.get("/admin").text
        page = root.get("/admin/zerogpu")
        assert page.status_code == 200, page.text[:500]
        html = page.text
    assert UUID in html and 'href="/spaces/alice/zgdemo"' in html  # the held device names its space
    assert "<td>30</td>" in html and "<td>200</td>" in html and "<td>900</td>" in html
    assert "<td>alice</td><td>2</td><td>2.5</td><td>900</td>" in html  # two calls today, 2.5 s of 900
    assert "<script>alert(1)</script>" not in html and "anonymous &lt;script&gt;" in html
    assert "<td>granted</td>" in html and "<td>released</td>" in html


def test_admin_sets_zerogpu_defaults_and_overrides_with_clear_errors(site: Site) -> None:
    with site.client("bob") as bob:
        refused = bob.post("/admin/zerogpu/defaults", data={"anonymous": "1"})
        assert refused.status_code in (400, 403)  # no CSRF token, not an admin: nothing saved
    with site.client("root") as root:
        saved = post_form(root, "/admin/zerogpu", "/admin/zerogpu/defaults",
                          {"anonymous": "15", "signed_in": "450", "max_duration": "90"})
        assert saved.status_code == 200 and "ZeroGPU defaults saved." in saved.text
        assert 'value="15"' in saved.text and 'value="450"' in saved.text and "Longest call allowed: 90 s" in saved.text
        override = post_form(root, "/admin/zerogpu", "/admin/zerogpu/quota", {"account": "bob", "seconds": "77"})
        assert override.status_code == 200 and "<td>77</td>" in override.text
        removed = post_form(root, "/admin/zerogpu", "/admin/zerogpu/quota", {"account": "bob", "seconds": ""})
        assert removed.status_code == 200 and "<td>77</td>" not in removed.text
        ghost = post_form(root, "/admin/zerogpu", "/admin/zerogpu/quota", {"account": "ghost", "seconds": "5"})
        assert ghost.status_code == 404 and "No user or organization named" in ghost.text
        negative = post_form(root, "/admin/zerogpu", "/admin/zerogpu/defaults", {"anonymous": "-1"})
        assert negative.status_code == 400 and "0 or more" in negative.text
        garbage = post_form(root, "/admin/zerogpu", "/admin/zerogpu/quota", {"account": "bob", "seconds": "lots"})
        assert garbage.status_code == 400 and "whole number" in garbage.text
    assert "450" in site.server.cli("zerogpu", "defaults").stdout  # the CLI sees the same settings
