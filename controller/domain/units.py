"""Byte counts as people read them: the one formatter of every message that names a size or a limit."""

from __future__ import annotations

_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB', 1 << 30 -> '1 GiB', 10.2 GiB -> '10.2 GiB' (binary units, one decimal at most)."""
    for unit, size in _UNITS:
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"
