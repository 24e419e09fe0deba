"""User and organization pages: /OWNER lists their spaces. Registered last (it matches any /NAME)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from controller.domain.errors import NotFound
from controller.services import accounts, spaces
from web.context import WebDep
from web.routing import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/{owner}")
def owner_page(web: WebDep, owner: str) -> Response:
    account = accounts.get_account(web.session, owner)
    if account is None:
        raise NotFound(f"No user or organization named {owner!r}.")
    found = spaces.list_spaces(web.session, web.principal, spaces.SpaceQuery(author=owner, limit=500))
    orgs = accounts.orgs_of(web.session, account) if account.kind == "user" else []
    return web.render("owner.html", account=account, spaces=found, orgs=orgs)
