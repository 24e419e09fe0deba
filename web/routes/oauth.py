"""Sign-in for apps, the browser side: /oauth/authorize asks the signed-in user to let a space's app
know who they are (the consent page), then sends them back to the app with a one-use code.

Problems with the request itself (unknown client, a redirect_uri off the space's own host, bad scope)
are shown here and never sent to the redirect URI; a user outside `hf_oauth_authorized_org` gets a page
saying which organizations may sign in.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Form
from fastapi.responses import Response

from controller.domain.errors import NotFound
from controller.domain.oauth import SCOPES, OAuthProblem
from controller.services import oauth, spaces
from controller.services.oauth import AuthorizeRequest, Grant
from web.context import CSRF, WebDep
from web.routing import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _request(client_id: str, redirect_uri: str, response_type: str, scope: str | None, state: str | None,
             nonce: str | None, code_challenge: str | None, code_challenge_method: str | None) -> AuthorizeRequest:
    return AuthorizeRequest(client_id=client_id, redirect_uri=redirect_uri, response_type=response_type,
                            scope=scope or None, state=state or None, nonce=nonce or None,
                            code_challenge=code_challenge or None, code_challenge_method=code_challenge_method or None)


def _back_to_app(grant: Grant, params: dict[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return grant.redirect_to + ("&" if "?" in grant.redirect_to else "?") + query


def _problem_page(web: WebDep, problem: OAuthProblem) -> Response:
    return web.render("oauth_error.html", status=400, problem=problem)


def _checked(web: WebDep, request: AuthorizeRequest) -> Grant | Response:
    """The grant, or the page to show instead: the request's problem or the org refusal."""
    try:
        grant = oauth.check_authorize(web.session, web.platform, request)
    except OAuthProblem as problem:
        return _problem_page(web, problem)
    principal = web.require_user()  # guests log in first and come back here (LoginRequired)
    if not spaces.can_read(web.session, principal, grant.space):  # a private space's app: only its readers
        raise NotFound(f"No space {grant.space.space_id!r}.")
    refusal = oauth.refusal_for(web.session, grant, principal.user)
    if refusal is not None:
        return web.render("oauth_refused.html", status=403, grant=grant, message=refusal)
    return grant


@router.get(oauth.AUTHORIZE_PATH)
def authorize_page(web: WebDep, client_id: str = "", redirect_uri: str = "", response_type: str = "",
                   scope: str | None = None, state: str | None = None, nonce: str | None = None,
                   code_challenge: str | None = None, code_challenge_method: str | None = None) -> Response:
    request = _request(client_id, redirect_uri, response_type, scope, state, nonce, code_challenge, code_challenge_method)
    checked = _checked(web, request)
    if not isinstance(checked, Grant):
        return checked
    scopes = [(name, SCOPES[name]) for name in checked.scopes]
    owner = spaces.can_write(web.session, web.require_user(), checked.space)
    notes = checked.config.ignored if owner else ()  # README values not used: told to those who can fix them
    response = web.render("oauth_authorize.html", grant=checked, auth=request, scopes=scopes, notes=notes)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post(oauth.AUTHORIZE_PATH, dependencies=[CSRF])
def authorize(web: WebDep, decision: str = Form(""), client_id: str = Form(""), redirect_uri: str = Form(""),
              response_type: str = Form(""), scope: str = Form(""), state: str = Form(""), nonce: str = Form(""),
              code_challenge: str = Form(""), code_challenge_method: str = Form("")) -> Response:
    request = _request(client_id, redirect_uri, response_type, scope, state, nonce, code_challenge, code_challenge_method)
    checked = _checked(web, request)
    if not isinstance(checked, Grant):
        return checked
    if decision != "allow":
        return web.redirect(_back_to_app(checked, {"error": "access_denied", "state": request.state,
                                                   "error_description": "The user did not allow the sign-in."}))
    code = oauth.issue_code(web.session, checked, request, web.require_user().user)
    web.session.commit()
    response = web.redirect(_back_to_app(checked, {"code": code, "state": request.state}))
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
