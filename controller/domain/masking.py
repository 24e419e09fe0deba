"""Secret masking: one Masker for every place text leaves an app or a build (logs, errorMessage, pages).

A secret is hidden in the forms it commonly takes when a program prints it:
* the value itself, and each line of a multi-line value (output is stored and streamed line by line,
  so a PEM key printed as-is shows up as separate lines);
* its escaped forms: Python `repr()` (of the str and of its bytes), JSON string escaping (`\\n`, `\\t`,
  quotes, unicode escapes, `\\/`), URL encoding (`quote` and `quote_plus`), hex, and base64 (standard and
  URL-safe, also inside a longer base64 text such as `Basic base64(user:secret)` or `echo $S | base64`);
* pieces of it cut at a line's edges (a line ending with the start of a secret, or starting with its end,
  as when output is wrapped, split into two writes around a newline, or cut by a log tail), and a whole
  line that is a piece of a secret.
Every occurrence of every form is found in the original text and the union of those spans is replaced,
so overlapping secrets never leave part of one visible.

Short values are the exception (masking them would shred logs and reveal the secret by what it hides):
values shorter than MIN_LENGTH are not masked, and values shorter than TOKEN_LENGTH only where they stand
as a whole token (not inside a longer word or number). Masking is for accidental disclosure; an app that
wants to publish its own secret can always encode it some other way.
"""

from __future__ import annotations

import base64
import json
import re
from bisect import bisect_right
from collections.abc import Iterable
from itertools import accumulate
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 3  # shorter values are never masked
TOKEN_LENGTH = 8  # shorter forms are masked only as whole tokens ("abc" in "abcd" stays)
MIN_LINE_LENGTH = 6  # lines of a multi-line secret shorter than this are masked only as whole tokens
MIN_PIECE = 6  # pieces of a secret at a line's edges (or a whole line) at least this long are masked
PIECE_SOURCE = 2 * MIN_PIECE  # only forms at least this long are masked by pieces
MIN_ENCODED = 8  # base64/hex forms shorter than this are not masked (they would hit hashes and blobs)
_ALNUM = "0-9A-Za-z"
REGEX_FORMS = 64  # up to this many long forms (~9 secrets) are found by one regex, more by prefix lookups


def _escaped(value: str) -> set[str]:
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {form.replace("/", "\\/") for form in list(forms) if "/" in form}  # JSON encoders that escape "/"
    forms.add(repr(value.encode())[2:-1])
    return forms


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 text of `raw` at each byte offset (0, 1, 2) inside a longer base64 text: the characters
    that depend on `raw` alone, without the partial characters and padding at either end."""
    cores = {base64.b64encode(raw).decode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
        cores.add(encoded[start:end])
    cores |= {core.replace("+", "-").replace("/", "_") for core in list(cores)}
    return {core for core in cores if len(core) >= MIN_ENCODED}


def _encoded(value: str) -> set[str]:
    raw = value.encode()
    forms = {quote(value, safe=""), quote(value), quote_plus(value)}
    forms |= _base64_cores(raw)
    if len(raw) >= MIN_ENCODED:
        forms |= {raw.hex(), raw.hex().upper()}
    return forms


def _line_forms(value: str) -> tuple[set[str], set[str]]:
    """(long, short) forms of each line of a multi-line value; lines without a letter or digit are skipped."""
    long_forms: set[str] = set()
    short_forms: set[str] = set()
    lines = [line.strip() for line in value.splitlines()]
    if len(lines) < 2:
        return long_forms, short_forms
    for line in lines:
        if len(line) < MIN_LENGTH or not re.search(f"[{_ALNUM}]", line):
            continue
        (long_forms if len(line) >= MIN_LINE_LENGTH else short_forms).update(_escaped(line))
    return long_forms, short_forms


def _needles(values: Iterable[str]) -> tuple[set[str], set[str], set[str]]:
    """(masked anywhere, masked as whole tokens, masked by pieces at line edges) for the values."""
    anywhere: set[str] = set()
    tokens: set[str] = set()
    pieces: set[str] = set()
    for value in values:
        escaped = _escaped(value)
        long_lines, short_lines = _line_forms(value)
        for form in escaped | _encoded(value) | long_lines:
            (anywhere if len(form) >= TOKEN_LENGTH else tokens).add(form)
        tokens |= short_lines
        pieces |= {f for f in escaped | long_lines | _base64_cores(value.encode()) if len(f) >= PIECE_SOURCE}
    return anywhere, {t for t in tokens if len(t) >= MIN_LENGTH} - anywhere, pieces


class Masker:
    """Replaces every known form of the given secret values with MASK. Build one per stream or message
    (it precomputes every form); calling it is cheap when no secret is present."""

    def __init__(self, secrets: Iterable[str]) -> None:
        anywhere, tokens, pieces = _needles({s for s in secrets if s and len(s) >= MIN_LENGTH})
        # Where a form starts. Few forms (a few secrets: the usual space): one lookahead regex, longest form
        # first (the union of spans from one start is the longest form's), run in C. Many: one dict lookup
        # per position, whatever their number (a regex alternation is tried branch by branch).
        longest_first = sorted(anywhere, key=len, reverse=True)
        self._anywhere = None
        self._by_prefix: dict[str, list[str]] = {}  # first TOKEN_LENGTH chars -> the forms that start so
        if len(longest_first) <= REGEX_FORMS:
            alternatives = "|".join(re.escape(f) for f in longest_first)
            self._anywhere = re.compile(f"(?=({alternatives}))") if longest_first else None
        else:
            for form in longest_first:
                self._by_prefix.setdefault(form[:TOKEN_LENGTH], []).append(form)
        alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
        self._tokens = re.compile(f"(?<![{_ALNUM}])(?:{alternatives})(?![{_ALNUM}])") if tokens else None
        ordered = sorted(pieces)
        self._pieces = "\0".join(ordered)  # one text to search: a few C-level finds per line, whatever the count
        self._starts = list(accumulate((len(p) + 1 for p in ordered[:-1]), initial=0))

    def __bool__(self) -> bool:
        return self._anywhere is not None or bool(self._by_prefix) or self._tokens is not None

    def __call__(self, text: str) -> str:
        if not text or not self:
            return text
        for _ in range(8):  # again while it changes: a secret that contains MASK can reappear around it
            masked = self._once(text)
            if masked == text:
                break
            text = masked
        return text

    def _once(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        if self._anywhere is not None:
            spans.extend((match.start(), match.start() + len(match.group(1))) for match in self._anywhere.finditer(text))
        by_prefix = self._by_prefix
        for start in range(len(text) - TOKEN_LENGTH + 1) if by_prefix else ():
            forms = by_prefix.get(text[start:start + TOKEN_LENGTH])
            if forms is not None:
                spans.extend((start, start + len(form)) for form in forms if text.startswith(form, start))
        if self._tokens is not None:
            spans.extend(match.span() for match in self._tokens.finditer(text))
        if self._pieces:
            spans.extend(self._edge_spans(text))
        return _replace(text, spans) if spans else text

    def _edge_spans(self, text: str) -> Iterable[tuple[int, int]]:
        offset = 0
        for line in text.split("\n"):
            body = line.strip()
            if len(body) >= MIN_PIECE:
                start = offset + len(line) - len(line.lstrip())
                for a, b in self._line_edges(body):
                    yield start + a, start + b
            offset += len(line) + 1

    def _line_edges(self, line: str) -> Iterable[tuple[int, int]]:
        """Spans of `line` that are a piece of a secret: the whole line, a head that ends a secret, or a
        tail that starts one (each at least MIN_PIECE long)."""
        pieces, starts = self._pieces, self._starts
        if line in pieces:
            yield 0, len(line)
            return
        tail = line[-MIN_PIECE:]
        at = pieces.find(tail)
        while at != -1:
            base = starts[bisect_right(starts, at) - 1]
            if line.endswith(pieces[base:at + MIN_PIECE]):  # the line ends with the start of a piece
                yield len(line) - (at + MIN_PIECE - base), len(line)
            at = pieces.find(tail, at + 1)
        at = pieces.find(line[:MIN_PIECE])
        while at != -1:
            base = starts[bisect_right(starts, at) - 1]
            end = pieces.find("\0", at)
            end = len(pieces) if end == -1 else end
            if at > base and line.startswith(pieces[at:end]):  # the line starts with the end of a piece
                yield 0, end - at
            at = pieces.find(line[:MIN_PIECE], at + 1)


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """Replace the union of the spans with one MASK per contiguous run."""
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    out: list[str] = []
    position = 0
    for start, stop in merged:
        out += [text[position:start], MASK]
        position = stop
    out.append(text[position:])
    return "".join(out)


NO_SECRETS = Masker(())


def mask(text: str, secrets: Iterable[str]) -> str:
    """One-off masking (build a Masker once when masking many lines)."""
    return Masker(secrets)(text)
