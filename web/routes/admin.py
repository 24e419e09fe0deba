"""Admin: accelerator inventory and who holds it, quotas, all spaces, platform sleep defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from controller.domain.errors import BadRequest, SpaceportError
from controller.services import quotas, sleep, spaces, webqueries, zerogpu
from controller.services.lifecycle import DEFAULT_SLEEP
from web.context import CSRF, Web, WebDep
from web.routing import WebRoute

router = APIRouter(prefix="/admin", route_class=WebRoute, include_in_schema=False)


def sleep_defaults(web: Web) -> dict[str, Any]:
    value = webqueries.get_setting(web.session, "sleep_defaults")
    return value if isinstance(value, dict) else dict(DEFAULT_SLEEP)


def admin_page(web: Web, status: int = 200, notice: str | None = None) -> Response:
    web.require_admin()
    catalog = quotas.catalog(web.platform)
    everything = spaces.list_spaces(web.session, web.principal, spaces.SpaceQuery(limit=1000))
    return web.render(
        "admin.html", status=status, notice=notice, devices=quotas.device_rows(web.session),
        quota_rows=quotas.list_quotas(web.session), accelerators=list(catalog.accelerators.values()),
        flavors=list(catalog.flavors.values()), all_spaces=everything, sleep_defaults=sleep_defaults(web),
        policy=sleep.policy(web.session, web.platform),
    )


def act(web: Web, action: Any, notice: str) -> Response:
    web.require_admin()
    try:
        action()
        web.session.commit()
    except SpaceportError as error:
        web.fail(error)
        return admin_page(web, status=error.status)
    return admin_page(web, notice=notice)


@router.get("")
def show(web: WebDep) -> Response:
    return admin_page(web)


@router.get("/zerogpu")
def zerogpu_page(web: WebDep) -> Response:
    """ZeroGPU (issue 15): the pool, who holds which device, quotas, today's usage and recent leases."""
    web.require_admin()
    return web.render("admin_zerogpu.html", view=zerogpu.overview(web.session, datetime.now(UTC)))


def parse_int(value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise BadRequest(f"{what} must be a whole number, got {value!r}.") from None


@router.post("/quotas", dependencies=[CSRF])
def set_quota(web: WebDep, owner: str = Form(""), accelerator: str = Form(""), limit: str = Form("")) -> Response:
    return act(web, lambda: quotas.set_quota(web.session, web.platform, owner.strip(), accelerator,
                                             parse_int(limit, "The quota")),
               f"Quota for {owner.strip()} on {accelerator} set to {limit.strip()}.")


@router.post("/accelerators", dependencies=[CSRF])
def add_devices(web: WebDep, accelerator: str = Form(""), count: str = Form("1"), node: str = Form("local")) -> Response:
    return act(web, lambda: quotas.add_devices(web.session, web.platform, accelerator, parse_int(count, "The count"),
                                               node.strip() or "local"),
               f"Added {count.strip()} {accelerator} device(s).")


@router.post("/sleep", dependencies=[CSRF])
async def set_sleep(web: WebDep, request: Request) -> Response:
    form = await request.form()
    values = {str(k): str(v) for k, v in form.items()}
    return act(web, lambda: save_sleep(web, values), "Sleep defaults saved.")


def save_sleep(web: Web, form: dict[str, str]) -> None:
    defaults: dict[str, int] = {}
    for flavor in quotas.catalog(web.platform).flavors:
        raw = form.get(f"flavor:{flavor}", "").strip()
        if raw:
            seconds = parse_int(raw, f"Sleep time for {flavor}")
            if seconds < 60:
                raise BadRequest(f"Sleep time for {flavor} must be at least 60 seconds (leave empty for never).")
            defaults[flavor] = seconds
    policy = {"light_enabled": "light_enabled" in form, "deep_enabled": "deep_enabled" in form,
              "deep_after": parse_int(form.get("deep_after", "3600"), "Deep sleep delay")}
    webqueries.put_setting(web.session, "sleep_defaults", defaults)
    webqueries.put_setting(web.session, "sleep_policy", policy)
