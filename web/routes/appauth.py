"""The platform side of the sign-in bridge for private apps on their host URL (controller.proxy.appauth)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from controller.domain.errors import NotFound
from controller.proxy.appauth import AUTH_PATH, BRIDGE_PATH, AppAuth, safe_next
from controller.services import spaces
from controller.services.views import app_host
from web.context import WebDep
from web.routing import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get(BRIDGE_PATH)
def app_sign_in(web: WebDep, space: str = "", next: str = "/", embed: str = "") -> Response:
    """Signed-in visitor with read access -> redirect to the app's host with a one-minute bridge token.

    Guests are sent to log in first; anyone else gets the same 404 as for a space that does not exist.
    """
    principal = web.require_user()
    owner, _, name = space.partition("/")
    found = spaces.find_space(web.session, owner, name) if owner and name else None
    if found is None or not spaces.can_read(web.session, principal, found):
        raise NotFound(f"No space {space!r}.")
    auth: AppAuth = web.request.app.state.app_auth
    token = auth.issue(found.space_id, principal.user.id, embed=embed == "1")
    origin = app_host(web.platform.settings, found)
    location = f"{origin}{AUTH_PATH}?token={quote(token)}&next={quote(safe_next(next), safe='')}"
    response = RedirectResponse(location, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
