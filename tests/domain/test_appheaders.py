"""README custom_headers and disable_embedding: only the three cross-origin isolation headers with their
spec's values ever come out of an owner's README (attacker cases: other headers, injected values)."""

from __future__ import annotations

import pytest

from controller.domain.appheaders import custom_headers, embeddable, ignored_headers


def test_the_three_isolation_headers_pass_with_their_values() -> None:
    card = {"custom_headers": {"Cross-Origin-Embedder-Policy": "require-corp",
                               "cross-origin-opener-policy": " Same-Origin ",
                               "CROSS-ORIGIN-RESOURCE-POLICY": "cross-origin"}}
    assert custom_headers(card) == (("cross-origin-embedder-policy", "require-corp"),
                                    ("cross-origin-opener-policy", "same-origin"),
                                    ("cross-origin-resource-policy", "cross-origin"))
    assert ignored_headers(card) == []


@pytest.mark.parametrize("entry", [
    {"Set-Cookie": "spaceport_session=x"},  # any other header: never
    {"Access-Control-Allow-Origin": "*"},
    {"Content-Security-Policy": "frame-ancestors *"},
    {"cross-origin-opener-policy": "same-origin\r\nSet-Cookie: spaceport_session=x"},  # header injection
    {"cross-origin-embedder-policy": "require-corp; report-to=evil"},
    {"cross-origin-resource-policy": ["cross-origin"]},
    {"cross-origin-opener-policy\r\nX-Evil": "same-origin"},
])
def test_anything_else_in_custom_headers_is_dropped_and_named(entry: dict[str, object]) -> None:
    card = {"custom_headers": entry}
    assert custom_headers(card) == ()
    assert len(ignored_headers(card)) == 1


@pytest.mark.parametrize("card", [{}, {"custom_headers": "COOP: same-origin"}, {"custom_headers": None}])
def test_no_or_malformed_custom_headers_add_nothing(card: dict[str, object]) -> None:
    assert custom_headers(card) == () and ignored_headers(card) == []


@pytest.mark.parametrize(("value", "expected"), [(True, False), ("true", False), (" True ", False),
                                                 (False, True), (None, True), ("no", True), (1, True)])
def test_disable_embedding(value: object, expected: bool) -> None:
    assert embeddable({"disable_embedding": value} if value is not None else {}) is expected
