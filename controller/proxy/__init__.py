"""Reverse proxy for spaces: route table, streaming HTTP/SSE/WebSocket forwarding, wake, activity."""

from controller.proxy.activator import SingleFlight
from controller.proxy.activity import ThrottledActivity
from controller.proxy.middleware import ProxyMiddleware
from controller.proxy.routes import RouteTable
from controller.proxy.types import (
    AccessPolicy,
    Activator,
    ActivitySink,
    HealthSink,
    Route,
    RouteSource,
    RouteState,
)

__all__ = [
    "AccessPolicy",
    "Activator",
    "ActivitySink",
    "HealthSink",
    "ProxyMiddleware",
    "Route",
    "RouteSource",
    "RouteState",
    "RouteTable",
    "SingleFlight",
    "ThrottledActivity",
]
