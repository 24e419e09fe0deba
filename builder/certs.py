"""Extra CA certificates for builds (corporate proxies, egress CAs)."""

from __future__ import annotations

from pathlib import Path

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def ca_bundle(ca_dir: Path | None) -> bytes | None:
    """The system CA bundle plus every *.crt / *.pem in ca_dir (None when ca_dir has none)."""
    if ca_dir is None or not ca_dir.is_dir():
        return None
    extras = sorted(p for p in ca_dir.iterdir() if p.suffix in (".crt", ".pem") and p.is_file())
    if not extras:
        return None
    parts = [SYSTEM_BUNDLE.read_bytes()] if SYSTEM_BUNDLE.is_file() else []
    parts += [p.read_bytes() for p in extras]
    return b"\n".join(part.strip() + b"\n" for part in parts)
