"""A space's public pages: the app, logs, files, commits, and the Duplicate form."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form
from fastapi.responses import Response

from controller.db.models import Space
from controller.domain import appheaders
from controller.domain.errors import NotFound, SpaceportError
from controller.proxy.appauth import BRIDGE_PATH
from controller.services import accounts, duplicate, spaces, webqueries
from controller.services.views import app_host
from web.context import CSRF, Web, WebDep
from web.routing import WebRoute

router = APIRouter(prefix="/spaces/{owner}/{name}", route_class=WebRoute, include_in_schema=False)
MAX_SHOWN = 500_000


def site_url(web: Web) -> str:
    return (web.platform.settings.public_url or str(web.request.base_url)).rstrip("/")


def app_url(web: Web, space: Space) -> str:
    """Always the host-based URL (like *.hf.space): app content never runs on the platform's origin.
    A private space's host signs its visitors in through `/auth/app` (see controller.proxy.appauth)."""
    return app_host(web.platform.settings, space) + "/"


def frame_url(web: Web, space: Space) -> str | None:
    """What the space page embeds; None when the app can only be opened in its own tab.

    A private app in the page's (cross-site) iframe needs a `SameSite=None; Secure; Partitioned`
    cookie, which browsers keep only on secure origins (https, or *.localhost): elsewhere, a link.
    """
    url = app_url(web, space)
    if not space.private:
        return url
    if not embeddable(url):
        return None
    return f"{BRIDGE_PATH}?space={quote(space.space_id, safe='/')}&next=%2F&embed=1"


def embeddable(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0].lower()
    return scheme == "https" or host == "localhost" or host.endswith(".localhost")


def app_layout(card: dict[str, Any]) -> dict[str, bool]:
    """README `fullWidth: true` (the app spans the window) and `header: mini` (a compact header, a taller app)."""
    return {"full_width": card.get("fullWidth") is True, "mini_header": card.get("header") == "mini"}


def space_context(web: Web, space: Space, tab: str) -> dict[str, Any]:
    base = f"/spaces/{space.owner.name}/{space.name}"
    return {
        "space": space, "tab": tab, "base": base,
        "can_write": spaces.can_write(web.session, web.principal, space),
        "app_url": app_url(web, space),
        "frame_url": frame_url(web, space),
        "git_url": f"{site_url(web)}{base}",
        "runtime_url": f"/api/spaces/{space.owner.name}/{space.name}/runtime",
        "owners": duplicate_owners(web),
        "missing_secrets": missing_secrets(web, space),
        "layout": app_layout(space.card_data or {}),
        "ignored_headers": appheaders.ignored_headers(space.card_data or {}),
    }


def missing_secrets(web: Web, space: Space) -> list[str]:
    """Secrets the source of a duplicate has and the copy still lacks (shown to its owners)."""
    if not space.duplicated_from or not spaces.can_write(web.session, web.principal, space):
        return []
    return duplicate.missing_secrets(web.session, web.principal, space)


def duplicate_owners(web: Web) -> list[str]:
    if web.principal is None:
        return []
    user = web.principal.user
    return [user.name, *[o.name for o in accounts.orgs_of(web.session, user)]]


@router.get("")
def space_page(web: WebDep, owner: str, name: str) -> Response:
    space = spaces.get_space(web.session, web.principal, owner, name)
    return web.render("space.html", **space_context(web, space, "app"))


@router.get("/logs")
def logs_page(web: WebDep, owner: str, name: str) -> Response:
    space = spaces.get_space(web.session, web.principal, owner, name)
    api = f"/api/spaces/{owner}/{name}"
    return web.render("logs.html", build_src=f"{api}/logs/build", run_src=f"{api}/logs/run",
                      **space_context(web, space, "logs"))


@router.get("/tree")
def files_page(web: WebDep, owner: str, name: str) -> Response:
    space = spaces.get_space(web.session, web.principal, owner, name)
    files = webqueries.head_files(web.platform, space)
    return web.render("files.html", files=files, **space_context(web, space, "files"))


@router.get("/blob/{path:path}")
def blob_page(web: WebDep, owner: str, name: str, path: str) -> Response:
    space = spaces.get_space(web.session, web.principal, owner, name)
    data = webqueries.head_file(web.platform, space, path, MAX_SHOWN + 1)
    if data is None:
        raise NotFound(f"No file {path!r} at the head of {owner}/{name}.")
    binary = b"\0" in data[:8000]
    text = None if binary else data[:MAX_SHOWN].decode(errors="replace")
    return web.render("blob.html", path=path, text=text, binary=binary, truncated=len(data) > MAX_SHOWN,
                      **space_context(web, space, "files"))


@router.get("/commits")
def commits_page(web: WebDep, owner: str, name: str) -> Response:
    space = spaces.get_space(web.session, web.principal, owner, name)
    commits = webqueries.recent_commits(web.platform, space)
    return web.render("commits.html", commits=commits, **space_context(web, space, "commits"))


@router.get("/duplicate")
def duplicate_page(web: WebDep, owner: str, name: str) -> Response:
    web.require_user()
    space = spaces.get_space(web.session, web.principal, owner, name)
    return web.render("duplicate.html", form={"name": name}, **space_context(web, space, "app"))


@router.post("/duplicate", dependencies=[CSRF])
def duplicate_action(web: WebDep, owner: str, name: str, to_owner: str = Form(""), to_name: str = Form(""),
                     visibility: str = Form("public")) -> Response:
    principal = web.require_user()
    try:
        request = duplicate.DuplicateRequest(target=f"{to_owner}/{to_name.strip()}", private=visibility == "private")
        copy = duplicate.duplicate(web.session, web.platform, principal, owner, name, request).space
        web.session.commit()
    except SpaceportError as error:
        web.fail(error)
        source = spaces.get_space(web.session, web.principal, owner, name)
        form = {"name": to_name, "owner": to_owner, "visibility": visibility}
        return web.render("duplicate.html", status=error.status, form=form, **space_context(web, source, "app"))
    return web.redirect(f"/spaces/{to_owner}/{copy.name}")
