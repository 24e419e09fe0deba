"""Secret masking: one Masker for every place text leaves an app or a build (logs, errorMessage, pages).

A secret is hidden in the forms it commonly takes when a program prints it:
* the value itself, and each line of a multi-line value (output is stored and streamed line by line,
  so a PEM key printed as-is shows up as separate lines);
* its escaped forms: Python `repr()` / JSON string escaping (`\\n`, `\\t`, quotes, unicode escapes),
  URL encoding (`quote` and `quote_plus`) and base64.
Longer needles are replaced first, so a whole value is never left half-masked by one of its lines.
Values shorter than MIN_LENGTH are not masked (masking "1" or "ab" would shred every log line).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 3
MIN_LINE_LENGTH = 6  # lines of a multi-line secret shorter than this ("-----", "}") are too common


def _forms(value: str) -> set[str]:
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             quote(value, safe=""), quote_plus(value)}  # fmt: skip
    encoded = value.encode()
    forms.add(base64.b64encode(encoded).decode())
    lines = [line.strip() for line in value.splitlines()]
    if len(lines) > 1:
        forms.update(line for line in lines if len(line) >= MIN_LINE_LENGTH)
        forms.update(repr(line)[1:-1] for line in lines if len(line) >= MIN_LINE_LENGTH)
    return {form for form in forms if len(form) >= MIN_LENGTH}


class Masker:
    """Replaces every known form of the given secret values with MASK."""

    def __init__(self, secrets: Iterable[str]) -> None:
        needles: set[str] = set()
        for value in secrets:
            if value and len(value) >= MIN_LENGTH:
                needles |= _forms(value)
        self._needles = sorted(needles, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._needles)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return text


def mask(text: str, secrets: Iterable[str]) -> str:
    """One-off masking (build a Masker once when masking many lines)."""
    return Masker(secrets)(text)
