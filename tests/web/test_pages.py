"""Every page for every kind of visitor, forms with CSRF, and inline errors, against a live server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.spaces import wait_stage
from tests.web.conftest import FIXTURES, PASSWORD, Site, csrf_of, post_form

ROLES = (None, "alice", "bob", "root")


@pytest.fixture(scope="module")
def world(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """alice/demo (public, pushed), alice/hidden (private, pushed), acme/team (org space, empty)."""
    with site.client("alice") as alice:
        for owner, name, visibility in (("alice", "demo", "public"), ("alice", "hidden", "private"),
                                        ("acme", "team", "public")):
            response = post_form(alice, "/new", "/new", {"owner": owner, "name": name, "sdk": "static",
                                                         "hardware": "cpu-basic", "visibility": visibility})
            assert response.status_code == 303 and response.headers["location"] == f"/spaces/{owner}/{name}"
    work = tmp_path_factory.mktemp("repos")
    site.push("alice", "demo", FIXTURES / "static", work / "demo")
    site.push("alice", "hidden", FIXTURES / "static", work / "hidden")
    return site


def pages(space: str) -> list[str]:
    base = f"/spaces/{space}"
    return [base, f"{base}/logs", f"{base}/tree", f"{base}/blob/index.html", f"{base}/blob/README.md",
            f"{base}/commits", f"{base}/duplicate", f"{base}/settings"]


COMMON = ["/", "/?q=demo", "/?sdk=static&running=1&owner=alice", "/new", "/login", "/signup", "/settings/tokens",
          "/admin", "/alice", "/acme", "/bob", "/nobody-here", "/spaces/alice/nope", "/spaces/alice/demo/blob/nope.txt"]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_without_server_errors(world: Site, role: str | None) -> None:
    with world.client(role) as client:
        for url in COMMON + pages("alice/demo") + pages("alice/hidden") + pages("acme/team"):
            response = client.get(url)
            assert response.status_code < 500, f"{role} GET {url}: {response.status_code}\n{response.text[:800]}"
            if response.status_code == 200:
                assert "text/html" in response.headers["content-type"]


@pytest.mark.parametrize(("role", "visible"), [(None, False), ("bob", False), ("alice", True), ("root", True)])
def test_private_space_is_404_to_others(world: Site, role: str | None, visible: bool) -> None:
    with world.client(role) as client:
        for url in pages("alice/hidden")[:6]:
            response = client.get(url)
            assert response.status_code == (200 if visible else 404), f"{role} {url}"
        listed = "alice/hidden" in client.get("/").text
        assert listed is visible


def test_guest_is_sent_to_login_and_back(world: Site) -> None:
    with world.client() as client:
        response = client.get("/spaces/alice/demo/settings")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/spaces/alice/demo/settings"
        page = client.get(response.headers["location"])
        back = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf": csrf_of(page.text),
                                           "next": "/spaces/alice/demo/settings"})
        assert back.headers["location"] == "/spaces/alice/demo/settings"
        assert client.get(back.headers["location"]).status_code == 200


def test_settings_are_owner_only(world: Site) -> None:
    with world.client("bob") as bob:
        response = bob.get("/spaces/alice/demo/settings")
        assert response.status_code == 403 and "may not change alice/demo" in response.text
        assert 'href="/spaces/alice/demo/settings"' not in bob.get("/spaces/alice/demo").text
    with world.client("alice") as alice:
        assert alice.get("/spaces/acme/team/settings").status_code == 200  # org member


def test_wrong_password_is_an_inline_error(world: Site) -> None:
    with world.client() as client:
        page = client.get("/login")
        response = client.post("/login", data={"username": "alice", "password": "nope-nope", "csrf": csrf_of(page.text)})
        assert response.status_code == 401 and "Wrong user name or password" in response.text
        assert "spaceport_session" not in response.cookies


def test_posts_without_csrf_are_refused_and_change_nothing(world: Site) -> None:
    with world.client("alice") as alice:
        response = alice.post("/new", data={"owner": "alice", "name": "forged", "sdk": "static", "csrf": "x" * 64})
        assert response.status_code == 403 and "CSRF" in response.text
        response = alice.post("/spaces/alice/demo/settings/visibility", data={"visibility": "private"})
        assert response.status_code == 403
        assert alice.get("/spaces/alice/forged").status_code == 404
    assert httpx.get(f"{world.url}/api/spaces/alice/demo").json()["private"] is False


def test_new_space_form_shows_errors_inline(world: Site) -> None:
    with world.client("alice") as alice:
        taken = post_form(alice, "/new", "/new", {"owner": "alice", "name": "demo", "sdk": "static"})
        assert taken.status_code == 409 and "already created" in taken.text and 'value="demo"' in taken.text
        bad = post_form(alice, "/new", "/new", {"owner": "alice", "name": "bad name!", "sdk": "static"})
        assert bad.status_code == 400 and 'class="flash error"' in bad.text
        other = post_form(alice, "/new", "/new", {"owner": "bob", "name": "x", "sdk": "static"})
        assert other.status_code == 403


def test_new_space_lands_on_push_instructions(world: Site) -> None:
    with world.client("alice") as alice:
        done = post_form(alice, "/new", "/new", {"owner": "alice", "name": "fresh", "sdk": "gradio"})
        page = alice.get(done.headers["location"])
        assert f"git clone {world.url}/spaces/alice/fresh" in page.text
        assert "has no code yet" in page.text and "NO_APP_FILE" in page.text


def test_files_blob_and_commits_show_the_repo(world: Site) -> None:
    with world.client() as client:
        tree = client.get("/spaces/alice/demo/tree").text
        assert 'href="/spaces/alice/demo/blob/index.html"' in tree
        blob = client.get("/spaces/alice/demo/blob/index.html").text
        assert "Hello from a static space" in blob  # escaped HTML source, shown as text
        assert "<h1>Hello from a static space" not in blob
        assert "initial" in client.get("/spaces/alice/demo/commits").text
        space = client.get("/spaces/alice/demo").text
        assert 'id="app-frame"' in space and f"http://alice-demo.localhost:{world.server.port}/" in space


def test_tokens_are_shown_once_and_revocable(world: Site) -> None:
    with world.client("bob") as bob:
        created = post_form(bob, "/settings/tokens", "/settings/tokens", {"name": "laptop", "scope": "read"})
        token = created.text.split('id="new-token" class="token" readonly value="')[1].split('"')[0]
        assert token.startswith("sp_")
        assert httpx.get(f"{world.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}).status_code == 200
        listing = bob.get("/settings/tokens").text
        assert token not in listing and "laptop" in listing
        token_id = listing.split('action="/settings/tokens/')[-1].split("/revoke")[0]
        revoked = post_form(bob, "/settings/tokens", f"/settings/tokens/{token_id}/revoke", {})
        assert revoked.status_code == 303
        assert httpx.get(f"{world.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}).status_code == 401


def test_variables_and_write_only_secrets(world: Site) -> None:
    settings = "/spaces/alice/demo/settings"
    with world.client("alice") as alice:
        saved = post_form(alice, settings, f"{settings}/variables", {"key": "GREETING", "value": "hi-there"})
        assert saved.status_code == 200 and "hi-there" in saved.text
        secret = post_form(alice, settings, f"{settings}/secrets", {"key": "API_KEY", "value": "s3cr3t-value-42"})
        assert secret.status_code == 200 and "API_KEY" in secret.text and "s3cr3t-value-42" not in secret.text
        assert "s3cr3t-value-42" not in alice.get(settings).text
        bad = post_form(alice, settings, f"{settings}/variables", {"key": "1bad key", "value": "x"})
        assert bad.status_code == 400 and 'class="flash error"' in bad.text
        gone = post_form(alice, settings, f"{settings}/variables/delete", {"key": "GREETING"})
        assert "hi-there" not in gone.text


def test_sleep_visibility_and_delete_confirmation(world: Site) -> None:
    settings = "/spaces/alice/fresh/settings"
    with world.client("alice") as alice:
        if alice.get(settings).status_code == 404:
            post_form(alice, "/new", "/new", {"owner": "alice", "name": "fresh", "sdk": "gradio"})
        assert post_form(alice, settings, f"{settings}/sleep", {"seconds": "3600"}).status_code == 200
        assert httpx.get(f"{world.url}/api/spaces/alice/fresh/runtime").json()["gcTimeout"] == 3600
        too_short = post_form(alice, settings, f"{settings}/sleep", {"seconds": "5"})
        assert too_short.status_code == 400
        post_form(alice, settings, f"{settings}/visibility", {"visibility": "private"})
        assert httpx.get(f"{world.url}/api/spaces/alice/fresh").status_code == 404
        wrong = post_form(alice, settings, f"{settings}/delete", {"confirm": "fresh"})
        assert wrong.status_code == 400 and "type the full name alice/fresh" in wrong.text
        deleted = post_form(alice, settings, f"{settings}/delete", {"confirm": "alice/fresh"})
        assert deleted.status_code == 303 and deleted.headers["location"] == "/alice"
        assert alice.get("/spaces/alice/fresh").status_code == 404


def test_hardware_beyond_quota_is_refused_until_admin_grants(world: Site) -> None:
    settings = "/spaces/acme/team/settings"
    with world.client("alice") as alice:
        refused = post_form(alice, settings, f"{settings}/hardware", {"flavor": "t4-small"})
        assert refused.status_code in (403, 409) and 'class="flash error"' in refused.text
        assert "quota" in refused.text.lower()
    with world.client("root") as root:
        added = post_form(root, "/admin", "/admin/accelerators", {"accelerator": "nvidia-t4", "count": "1"})
        assert added.status_code == 200 and "Added 1 nvidia-t4" in added.text
        quota = post_form(root, "/admin", "/admin/quotas", {"owner": "acme", "accelerator": "nvidia-t4", "limit": "1"})
        assert quota.status_code == 200 and "Quota for acme on nvidia-t4 set to 1" in quota.text
        bad = post_form(root, "/admin", "/admin/quotas", {"owner": "ghost", "accelerator": "nvidia-t4", "limit": "1"})
        assert bad.status_code == 404 and "ghost" in bad.text
    with world.client("alice") as alice:
        granted = post_form(alice, settings, f"{settings}/hardware", {"flavor": "t4-small"})
        assert granted.status_code == 200 and "Hardware set to t4-small" in granted.text
    assert httpx.get(f"{world.url}/api/spaces/acme/team/runtime").json()["hardware"]["requested"] == "t4-small"


def test_admin_page_is_admin_only_and_saves_sleep_defaults(world: Site) -> None:
    with world.client("bob") as bob:
        assert bob.get("/admin").status_code == 403
    with world.client("root") as root:
        page = root.get("/admin").text
        assert "alice/hidden" in page and "All spaces" in page
        saved = post_form(root, "/admin", "/admin/sleep", {"flavor:cpu-basic": "7200", "light_enabled": "1",
                                                           "deep_after": "600"})
        assert saved.status_code == 200 and 'value="7200"' in saved.text
        bad = post_form(root, "/admin", "/admin/sleep", {"flavor:cpu-basic": "5", "deep_after": "600"})
        assert bad.status_code == 400


def test_duplicate_as_another_user(world: Site) -> None:
    with world.client("alice") as alice:
        settings = "/spaces/alice/demo/settings"
        post_form(alice, settings, f"{settings}/secrets", {"key": "DUP_TOKEN", "value": "not-copied-1"})
    with world.client("bob") as bob:
        done = post_form(bob, "/spaces/alice/demo", "/spaces/alice/demo/duplicate",
                         {"to_owner": "bob", "to_name": "demo-copy", "visibility": "public"})
        assert done.status_code == 303 and done.headers["location"] == "/spaces/bob/demo-copy"
        copy = bob.get("/spaces/bob/demo-copy").text
        assert "Duplicated from" in copy and "still needs its secrets: " in copy and "DUP_TOKEN" in copy
        assert "index.html" in bob.get("/spaces/bob/demo-copy/tree").text
        again = post_form(bob, "/spaces/alice/demo", "/spaces/alice/demo/duplicate",
                          {"to_owner": "bob", "to_name": "demo-copy", "visibility": "public"})
        assert again.status_code == 409 and 'class="flash error"' in again.text
    info = httpx.get(f"{world.url}/api/spaces/bob/demo-copy").json()
    assert info["duplicatedFrom"] == "alice/demo"


def test_ui_routes_leave_api_git_and_health_alone(world: Site) -> None:
    assert httpx.get(f"{world.url}/healthz").json() == {"status": "ok", "role": "leader"}
    assert httpx.get(f"{world.url}/api/spaces").status_code == 200
    refs = httpx.get(f"{world.url}/spaces/alice/demo/info/refs?service=git-upload-pack")
    assert refs.status_code == 200 and "git-upload-pack" in refs.headers["content-type"]
    assert httpx.get(f"{world.url}/static/spaceport.css").status_code == 200
    owner = httpx.get(f"{world.url}/alice")
    assert owner.status_code == 200 and "/spaces/alice/demo" in owner.text and "alice/hidden" not in owner.text


def test_private_space_page_links_its_host_url_and_embeds_it_through_the_bridge(world: Site) -> None:
    host = f"http://alice-hidden.localhost:{world.server.port}"
    with world.client("alice") as alice:
        page = alice.get("/spaces/alice/hidden").text
        assert f'href="{host}/"' in page and "/apps/alice/hidden" not in page
        assert 'src="/auth/app?space=alice/hidden&amp;next=%2F&amp;embed=1"' in page
        bridge = alice.get("/auth/app?space=alice/hidden&next=/index.html%3Fa%3D1")
        assert bridge.status_code == 303 and bridge.headers["cache-control"] == "no-store"
        assert bridge.headers["location"].startswith(f"{host}/__spaceport__/auth?token=")
        assert bridge.headers["location"].endswith("&next=%2Findex.html%3Fa%3D1")
        for evil in ("//evil.example/", "https://evil.example/", "/\t/evil.example"):
            moved = alice.get("/auth/app", params={"space": "alice/hidden", "next": evil})
            assert moved.headers["location"].endswith("&next=%2F"), evil
    with world.client() as guest:
        moved = guest.get("/auth/app?space=alice/hidden&next=/")
        assert moved.status_code == 303 and moved.headers["location"].startswith("/login?next=")
    with world.client("bob") as bob:
        for space in ("alice/hidden", "alice/nope", "nonsense"):
            response = bob.get(f"/auth/app?space={space}&next=/")
            assert response.status_code == 404 and "token=" not in response.text


ISOLATED_README = """---
title: Isolated
sdk: static
fullWidth: true
header: mini
disable_embedding: true
custom_headers:
  cross-origin-embedder-policy: require-corp
  Cross-Origin-Opener-Policy: same-origin
  x-frame-options: ALLOWALL
---
"""


def test_readme_layout_and_response_headers_are_honoured(world: Site, tmp_path: Path) -> None:
    """fullWidth, header: mini, custom_headers (allowed ones only; the owner is told what was ignored)
    and disable_embedding, from the page to the app's responses through the proxy."""
    with world.client("alice") as alice:
        made = post_form(alice, "/new", "/new", {"owner": "alice", "name": "iso", "sdk": "static",
                                                 "hardware": "cpu-basic", "visibility": "public"})
        assert made.status_code == 303
    world.push("alice", "iso", {"README.md": ISOLATED_README, "index.html": "<h1>isolated</h1>"}, tmp_path / "iso")
    wait_stage(world.server, "alice/iso", {"RUNNING"})
    with world.client("alice") as alice:
        page = alice.get("/spaces/alice/iso").text
        assert 'class="app-frame full-width tall"' in page and 'class="space-head mini"' in page
        assert 'id="ignored-headers"' in page and "x-frame-options: ALLOWALL" in page
    with world.client("bob") as bob:
        assert 'id="ignored-headers"' not in bob.get("/spaces/alice/iso").text  # the owner's business
    app = httpx.get(f"{world.url}/", headers={"Host": f"alice-iso.localhost:{world.server.port}"}, timeout=60)
    assert app.status_code == 200 and "isolated" in app.text
    assert app.headers["cross-origin-embedder-policy"] == "require-corp"
    assert app.headers["cross-origin-opener-policy"] == "same-origin"
    origin = world.url.rstrip("/")
    assert f"frame-ancestors {origin}" in app.headers.get_list("content-security-policy"), app.headers
    assert "x-frame-options" not in app.headers
