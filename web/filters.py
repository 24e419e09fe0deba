"""Jinja filters and globals: stage badges, card colours, relative times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from controller.domain.stages import ERRORS, INTERMEDIATE, SERVING, Stage

COLORS = {
    "red": "#ef4444", "yellow": "#eab308", "green": "#22c55e", "blue": "#3b82f6",
    "indigo": "#6366f1", "purple": "#a855f7", "pink": "#ec4899", "gray": "#6b7280",
}


def stage_kind(stage: str | None) -> str:
    """CSS modifier for a stage badge: ok, busy, error or idle."""
    try:
        value = Stage(stage or "")
    except ValueError:
        return "idle"
    if value in SERVING:
        return "ok"
    if value in INTERMEDIATE:
        return "busy"
    if value in ERRORS:
        return "error"
    return "idle"


def card_gradient(card: dict[str, Any] | None) -> str:
    card = card or {}
    start = COLORS.get(str(card.get("colorFrom", "")), COLORS["indigo"])
    end = COLORS.get(str(card.get("colorTo", "")), COLORS["purple"])
    return f"linear-gradient(135deg, {start}, {end})"


def timeago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def duration(seconds: int | None) -> str:
    if seconds is None or seconds < 0:
        return "never"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


def install(env: Environment) -> None:
    env.filters["stage_kind"] = stage_kind
    env.filters["card_gradient"] = card_gradient
    env.filters["timeago"] = timeago
    env.filters["duration"] = duration
