"""A space's settings (owner): hardware, sleep, variables, secrets, visibility, lifecycle, delete."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Form
from fastapi.responses import Response

from controller.db.models import Space
from controller.domain.errors import BadRequest, SpaceportError
from controller.services import lifecycle, quotas, settings_vars, spaces
from controller.services.settings_vars import KeyValue
from web.context import CSRF, Web, WebDep
from web.routes.space import space_context
from web.routing import WebRoute

router = APIRouter(prefix="/spaces/{owner}/{name}/settings", route_class=WebRoute, include_in_schema=False)
SLEEP_CHOICES = [("", "Platform default"), ("300", "5 minutes"), ("900", "15 minutes"), ("3600", "1 hour"),
                 ("21600", "6 hours"), ("86400", "24 hours"), ("172800", "48 hours"), ("-1", "Never")]


def writable(web: Web, owner: str, name: str) -> Space:
    web.require_user()
    return spaces.get_writable_space(web.session, web.principal, owner, name)


def settings_page(web: Web, space: Space, status: int = 200, notice: str | None = None) -> Response:
    return web.render(
        "settings.html", status=status, notice=notice,
        flavors=quotas.flavor_options(web.session, web.platform, space.owner, space),
        variables=settings_vars.list_variables(web.session, space),
        secret_keys=sorted(settings_vars.secret_keys(web.session, space)),
        sleep_choices=SLEEP_CHOICES, default_sleep=lifecycle.default_sleep(web.session, space),
        **space_context(web, space, "settings"),
    )


def act(web: Web, owner: str, name: str, action: Callable[[Space], None], notice: str) -> Response:
    """Run one owner action; show the settings again with a notice, or the refusal inline."""
    space = writable(web, owner, name)
    try:
        action(space)
        web.session.commit()
    except SpaceportError as error:
        web.fail(error)
        return settings_page(web, writable(web, owner, name), status=error.status)
    return settings_page(web, writable(web, owner, name), notice=notice)


@router.get("")
def show(web: WebDep, owner: str, name: str) -> Response:
    return settings_page(web, writable(web, owner, name))


@router.post("/hardware", dependencies=[CSRF])
def hardware(web: WebDep, owner: str, name: str, flavor: str = Form("")) -> Response:
    return act(web, owner, name, lambda s: lifecycle.change_hardware(web.session, web.platform, s, flavor),
               f"Hardware set to {flavor}.")


def parse_sleep(value: str) -> int | None:
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"Sleep time must be a number of seconds, got {value!r}.") from None


@router.post("/sleep", dependencies=[CSRF])
def sleep(web: WebDep, owner: str, name: str, seconds: str = Form("")) -> Response:
    return act(web, owner, name, lambda s: lifecycle.set_sleep_time(s, parse_sleep(seconds)), "Sleep time saved.")


@router.post("/variables", dependencies=[CSRF])
def add_variable(web: WebDep, owner: str, name: str, key: str = Form(""), value: str = Form("")) -> Response:
    item = KeyValue(key=key.strip(), value=value)
    return act(web, owner, name, lambda s: settings_vars.set_variable(web.session, web.platform, s, item),
               f"Variable {key.strip()} saved.")


@router.post("/variables/delete", dependencies=[CSRF])
def delete_variable(web: WebDep, owner: str, name: str, key: str = Form("")) -> Response:
    return act(web, owner, name, lambda s: _ignore(settings_vars.delete_variable(web.session, web.platform, s, key)),
               f"Variable {key} deleted.")


@router.post("/secrets", dependencies=[CSRF])
def add_secret(web: WebDep, owner: str, name: str, key: str = Form(""), value: str = Form("")) -> Response:
    item = KeyValue(key=key.strip(), value=value)
    return act(web, owner, name, lambda s: settings_vars.set_secret(web.session, web.platform, s, item),
               f"Secret {key.strip()} saved (it is never shown again).")


@router.post("/secrets/delete", dependencies=[CSRF])
def delete_secret(web: WebDep, owner: str, name: str, key: str = Form("")) -> Response:
    return act(web, owner, name, lambda s: _ignore(settings_vars.delete_secret(web.session, web.platform, s, key)),
               f"Secret {key} deleted.")


def _ignore(_result: object) -> None:
    return None


@router.post("/visibility", dependencies=[CSRF])
def visibility(web: WebDep, owner: str, name: str, visibility: str = Form("public")) -> Response:
    return act(web, owner, name, lambda s: spaces.set_private(s, visibility == "private"),
               f"The space is now {'private' if visibility == 'private' else 'public'}.")


@router.post("/pause", dependencies=[CSRF])
def pause(web: WebDep, owner: str, name: str) -> Response:
    return act(web, owner, name, lambda s: lifecycle.pause(web.session, web.platform, s), "Paused.")


@router.post("/restart", dependencies=[CSRF])
def restart(web: WebDep, owner: str, name: str, factory: str = Form("")) -> Response:
    return act(web, owner, name, lambda s: lifecycle.restart(web.session, web.platform, s, factory=bool(factory)),
               "Factory rebuild started." if factory else "Restarting.")


@router.post("/delete", dependencies=[CSRF])
def delete(web: WebDep, owner: str, name: str, confirm: str = Form("")) -> Response:
    space = writable(web, owner, name)
    if confirm.strip() != f"{owner}/{name}":
        web.flashes.append(("error", f"To delete, type the full name {owner}/{name} exactly."))
        return settings_page(web, space, status=400)
    lifecycle.delete_space(web.session, web.platform, space)
    web.session.commit()
    return web.redirect(f"/{owner}")
