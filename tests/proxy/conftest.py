"""Fixtures for the proxy tests (the servers themselves live in proxy_harness.py)."""

from proxy_harness import stack

__all__ = ["stack"]
