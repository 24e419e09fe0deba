"""Security tests: fuzzing the API and hostile input; shared helpers (identities, a watched healthy space)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.support.server import LiveServer

STATIC_README = "---\nsdk: static\nstartup_duration_timeout: 1m\n---\n"


@dataclass(frozen=True)
class Identity:
    name: str
    token: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def static_files(body: str) -> dict[str, str]:
    return {"README.md": STATIC_README, "index.html": body}


def host_get(server: LiveServer, slug: str, path: str = "/", timeout: float = 30) -> httpx.Response:
    """GET an app by its host-based URL (Python does not resolve *.localhost: send the Host header)."""
    return httpx.get(f"{server.url}{path}", headers={"Host": f"{slug}.localhost:{server.port}"}, timeout=timeout)


def create_space(server: LiveServer, who: Identity, name: str, sdk: str = "static") -> None:
    body = {"name": name, "type": "space", "sdk": sdk}
    response = httpx.post(f"{server.url}/api/repos/create", json=body, headers=who.headers, timeout=30)
    assert response.status_code == 200, response.text


# ----------------------------------------------------------------------------- fuzzing (tests and bench/fuzz.py)

EXISTING: dict[str, list[str]] = {"owner": ["alice", "root"], "name": ["site", "empty"], "revision": ["main", "HEAD"],
                                  "path": ["index.html", "README.md", ""]}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@dataclass
class OperationReport:
    """What one operation did under one caller: examples sent and failures by check (first few kept)."""

    label: str
    caller: str
    examples: int = 0
    failures: dict[str, list[str]] = field(default_factory=dict)

    def add(self, check: str, detail: str) -> None:
        found = self.failures.setdefault(check, [])
        if len(found) < 3 and detail not in found:
            found.append(detail)
        elif detail not in found:
            found.append("...")


def load_schema(base_url: str) -> BaseSchema:
    """Spaceport's own schema, with half of the path parameters steered to names that exist."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")

    @schema.hook
    def flatmap_path_parameters(_context: HookContext, params: dict[str, Any] | None) -> Any:
        if not params:
            return st.just(params)
        real = st.fixed_dictionaries({k: st.sampled_from(EXISTING[k]) for k in params if k in EXISTING})
        return st.one_of(st.just(params), real.map(lambda found: {**params, **found}))

    @schema.hook
    def map_query(_context: HookContext, query: dict[str, Any] | None) -> Any:
        if query and query.get("follow") in (True, "true", "True", "1"):
            return {**query, "follow": "false"}  # a followed log stream never ends: streaming is tested elsewhere
        return query

    return schema


def operations(schema: BaseSchema) -> list[APIOperation]:
    return [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]


def fuzz_operation(operation: APIOperation, base_url: str, caller: Identity, max_examples: int) -> OperationReport:
    """Send positive and negative cases; never raises for a failed check, it is recorded instead."""
    report = OperationReport(operation.label, caller.name)

    session = requests.Session()  # one TLS context and connection pool per operation, not one per case
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # a caller stays who it is: no cookie kept

    def send(case: Case) -> None:
        report.examples += 1
        try:
            case.call_and_validate(base_url=base_url, session=session, headers=caller.headers, checks=CHECKS, timeout=60)
        except FailureGroup as group:
            for failure in group.exceptions:
                report.add(failure.title, f"{failure.message.strip()[:300]} | {_repro(case)}")
        except requests.RequestException as exc:
            report.add("Network error (connection dropped)", f"{type(exc).__name__} | {_repro(case)}")

    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negatable(operation) else (GenerationMode.POSITIVE,)
    for mode in modes:
        run = settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                       phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))(
            given(operation.as_strategy(generation_mode=mode))(send))
        with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (e.g. no parameters at all)
            run()
    return report


def negatable(operation: APIOperation) -> bool:
    """Whether a negative case exists: not when every input is a path parameter that takes any string
    (hypothesis then searches for seconds per operation before it gives up as Unsatisfiable)."""
    raw = operation.definition.raw
    if "requestBody" in raw:
        return True
    for parameter in raw.get("parameters", []):
        constraints = {k: v for k, v in parameter.get("schema", {}).items() if k not in ("title", "description")}
        if parameter.get("in") != "path" or constraints != {"type": "string"}:
            return True
    return False


def _repro(case: Case) -> str:
    return case.as_curl_command(headers={"Authorization": "Bearer TOKEN"})[:400]
