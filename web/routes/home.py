"""The home page (space cards with search and filters) and the new-space form."""

from __future__ import annotations

from fastapi import APIRouter, Form
from fastapi.responses import Response

from controller.domain.errors import SpaceportError
from controller.services import accounts, quotas, spaces
from web.context import CSRF, WebDep
from web.routing import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/")
def home(web: WebDep, q: str = "", sdk: str = "", owner: str = "", running: str = "") -> Response:
    query = spaces.SpaceQuery(search=q.strip() or None, sdk=sdk if sdk in spaces.SDKS else None,
                              author=owner.strip() or None, running=True if running else None, limit=200)
    found = spaces.list_spaces(web.session, web.principal, query)
    filters = {"q": q, "sdk": sdk, "owner": owner, "running": bool(running)}
    return web.render("home.html", spaces=found, filters=filters, sdks=spaces.SDKS)


def namespaces(web: WebDep) -> list[str]:
    principal = web.require_user()
    return [principal.user.name, *[o.name for o in accounts.orgs_of(web.session, principal.user)]]


def new_form(web: WebDep, status: int = 200, **values: str) -> Response:
    owners = namespaces(web)
    owner = values.get("owner") or owners[0]
    account = accounts.require_account(web.session, owner)
    options = quotas.flavor_options(web.session, web.platform, account)
    form = {"owner": owner, "name": "", "sdk": "gradio", "hardware": "cpu-basic", "visibility": "public", **values}
    return web.render("new.html", status=status, owners=owners, sdks=spaces.SDKS, flavors=options, form=form)


@router.get("/new")
def new_page(web: WebDep, owner: str = "") -> Response:
    return new_form(web, owner=owner)


@router.post("/new", dependencies=[CSRF])
def create(web: WebDep, owner: str = Form(""), name: str = Form(""), sdk: str = Form("gradio"),
           hardware: str = Form("cpu-basic"), visibility: str = Form("public")) -> Response:
    principal = web.require_user()
    try:
        space = spaces.create_space(web.session, web.platform.settings.repos_dir, principal, owner, name.strip(),
                                    sdk=sdk, private=visibility == "private", hardware="cpu-basic")
        if hardware != "cpu-basic":
            quotas.check_request(web.session, web.platform, space, hardware)
            space.requested_hardware = hardware
        web.session.commit()
    except SpaceportError as error:
        web.fail(error)
        return new_form(web, status=error.status, owner=owner, name=name, sdk=sdk, hardware=hardware,
                        visibility=visibility)
    return web.redirect(f"/spaces/{owner}/{space.name}")
