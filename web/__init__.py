"""Spaceport web UI (server-rendered): `install(app)` mounts its pages and static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the UI. Call it after every other router: /OWNER matches any single-segment path."""
    from web.routes import accounts, admin, appauth, home, oauth, owner, space, space_settings

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (home, accounts, appauth, oauth, admin, space_settings, space):
        app.include_router(module.router)
    app.include_router(owner.router)
