"""Response headers a space's README asks for: `custom_headers` and `disable_embedding` (HF front matter).

The hosted platform honours three custom headers, the cross-origin isolation ones an app needs for
SharedArrayBuffer or WebGPU: Cross-Origin-Embedder-Policy, -Opener-Policy and -Resource-Policy. The
README is the owner's, so untrusted: only those three names, each with one of the values its spec
defines, ever reach a response (no header injection, no other header). Anything else is ignored and
named by `ignored_headers` (the space page says so).

`disable_embedding: true`: the app may be framed by the platform's own space page and nothing else
(Content-Security-Policy: frame-ancestors PLATFORM_ORIGIN, added by the proxy: isolation.route_headers).
"""

from __future__ import annotations

from collections.abc import Mapping

ALLOWED: dict[str, frozenset[str]] = {
    "cross-origin-embedder-policy": frozenset({"unsafe-none", "require-corp", "credentialless"}),
    "cross-origin-opener-policy": frozenset(
        {"unsafe-none", "same-origin-allow-popups", "same-origin", "noopener-allow-popups"}),
    "cross-origin-resource-policy": frozenset({"same-site", "same-origin", "cross-origin"}),
}

Headers = tuple[tuple[str, str], ...]


def custom_headers(card: Mapping[str, object]) -> Headers:
    """The allowed (name, value) pairs of the card's `custom_headers`, lower-case names, sorted."""
    found = card.get("custom_headers")
    if not isinstance(found, Mapping):
        return ()
    pairs = {}
    for name, value in found.items():
        key, wanted = str(name).strip().lower(), str(value).strip().lower()
        if wanted in ALLOWED.get(key, frozenset()):
            pairs[key] = wanted
    return tuple(sorted(pairs.items()))


def ignored_headers(card: Mapping[str, object]) -> list[str]:
    """`custom_headers` entries that `custom_headers` drops, as `Name: value` (for the space page)."""
    found = card.get("custom_headers")
    if not isinstance(found, Mapping):
        return []
    kept = dict(custom_headers(card))
    return [f"{name}: {value}" for name, value in found.items()
            if kept.get(str(name).strip().lower()) != str(value).strip().lower()]


def embeddable(card: Mapping[str, object]) -> bool:
    """False when the README sets `disable_embedding: true` (YAML true, or the string "true")."""
    value = card.get("disable_embedding")
    return not (value is True or (isinstance(value, str) and value.strip().lower() == "true"))
