"""Every request's database session commits before its response is sent.

FastAPI runs the exit of a `yield` dependency with the default (request) scope after the response has
gone out: a client then saw 200 for a space it could not read yet (CI: a test read the database right
after `POST /api/repos/create` and found no row), or for a commit that then failed. Every route that
takes a session must take it function-scoped (`controller.api.deps.DB`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from controller.api.deps import get_db
from controller.app import create_app
from controller.config import Settings


def _session_scopes(dependant: Dependant) -> Iterator[str | None]:
    for sub in dependant.dependencies:
        if sub.call is get_db:
            yield sub.scope
        yield from _session_scopes(sub)


def _api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI >= 0.160 nests included routers
        if included is not None:
            yield from _api_routes(included.routes)


def test_every_route_commits_its_session_before_responding(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    checked = 0
    for route in _api_routes(app.routes):
        scopes = set(_session_scopes(route.dependant))
        assert scopes <= {"function"}, f"{route.path} {sorted(route.methods)} takes a request-scoped session"
        checked += bool(scopes)
    assert checked > 20  # the API, hub and log routes were all inspected
