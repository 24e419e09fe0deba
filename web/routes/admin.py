"""Admin: accelerator inventory and who holds it, quotas, all spaces, platform sleep defaults."""

from __future__ import annotations

from collections.abc import Callable
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


def act(web: Web, action: Any, notice: str, page: Callable[..., Response] = admin_page) -> Response:
    """Run an admin action, then show `page` (the admin page, or e.g. the ZeroGPU page) with its outcome."""
    web.require_admin()
    try:
        action()
        web.session.commit()
    except SpaceportError as error:
        web.fail(error)
        return page(web, status=error.status)
    return page(web, notice=notice)


@router.get("")
def show(web: WebDep) -> Response:
    return admin_page(web)


def zerogpu_view(web: Web, status: int = 200, notice: str | None = None) -> Response:
    """ZeroGPU (issue 15): the pool, who holds which device, quotas, today's usage and recent leases."""
    web.require_admin()
    return web.render("admin_zerogpu.html", status=status, notice=notice,
                      view=zerogpu.overview(web.session, datetime.now(UTC)))


def zerogpu_act(web: Web, action: Any, notice: str) -> Response:
    return act(web, action, notice, page=zerogpu_view)


@router.get("/zerogpu")
def zerogpu_page(web: WebDep) -> Response:
    return zerogpu_view(web)


@router.post("/zerogpu/defaults", dependencies=[CSRF])
def zerogpu_defaults(web: WebDep, anonymous: str = Form(""), signed_in: str = Form(""), max_duration: str = Form("")) -> Response:
    values = {"anonymous": anonymous, "signed_in": signed_in, "max_duration": max_duration}
    return zerogpu_act(web, lambda: zerogpu.set_defaults(web.session, **{
        k: parse_int(v, f"ZeroGPU {k.replace('_', '-')}") for k, v in values.items() if v.strip()}), "ZeroGPU defaults saved.")


@router.post("/zerogpu/quota", dependencies=[CSRF])
def zerogpu_quota(web: WebDep, account: str = Form(""), seconds: str = Form("")) -> Response:
    name, raw = account.strip(), seconds.strip()

    def save() -> None:
        limit = parse_int(raw, "The GPU seconds per day") if raw else None
        if limit is not None and limit < 0:
            raise BadRequest("GPU seconds per day must be 0 or more (leave empty to remove the override).")
        zerogpu.set_quota(web.session, name, limit)

    done = f"{name}: {raw} GPU seconds per day." if raw else f"{name}'s ZeroGPU override removed."
    return zerogpu_act(web, save, done)


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
