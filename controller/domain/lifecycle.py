"""Derive a space's stage from desired state, its head build and its instances. Pure and level-based."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from controller.domain.stages import Stage

MAX_RESTARTS = 3
TRACEBACK = "Traceback (most recent call last):"
MAX_CAUSE = 400  # characters of a traceback's last line kept in a stage message


@dataclass(frozen=True)
class Observed:
    """What the reconciler knows about one space at one moment."""

    desired: str  # running | frozen | sleeping | paused
    has_head: bool
    build_status: str | None  # status of the head commit's build, None if none
    build_error_stage: str | None
    build_error: str | None
    serving: bool  # an instance is ready and routed (may be an older build)
    wanted_state: str | None  # state of the wanted instance row: starting|ready|frozen|stopped|failed|None
    wanted_message: str | None


def derive_stage(o: Observed) -> tuple[Stage, str | None]:
    """(stage, error message) that the API and UI show."""
    if o.desired == "paused":
        return Stage.PAUSED, None
    if o.desired in ("sleeping", "frozen"):
        return Stage.SLEEPING, None
    if not o.has_head:
        return Stage.NO_APP_FILE, "Push a commit with an app to main to deploy this space."
    if o.build_status in ("queued", "running"):
        return (Stage.RUNNING_BUILDING if o.serving else Stage.BUILDING), None
    if o.build_status == "failed":
        return _build_failed(o)
    return _runtime(o)


def _build_failed(o: Observed) -> tuple[Stage, str | None]:
    if o.serving:
        return Stage.RUNNING, f"The latest build failed; the previous version keeps running. {o.build_error or ''}".strip()
    return Stage(o.build_error_stage or Stage.BUILD_ERROR), o.build_error


def _runtime(o: Observed) -> tuple[Stage, str | None]:
    if o.wanted_state == "ready":
        return Stage.RUNNING, None
    if o.wanted_state == "failed":
        if o.serving:
            return Stage.RUNNING, f"The new version failed to start; the previous version keeps running. {o.wanted_message or ''}".strip()
        return Stage.RUNTIME_ERROR, o.wanted_message
    if o.wanted_state == "crashed":
        return Stage.RUNTIME_ERROR, o.wanted_message
    if o.build_status == "cancelled" and o.wanted_state is None:
        return (Stage.RUNNING if o.serving else Stage.BUILDING), None
    # a start in progress shows what the app answers so far (HTTP 500 + its traceback), else nothing
    message = o.wanted_message if o.wanted_state == "starting" else None
    return (Stage.RUNNING_APP_STARTING if o.serving else Stage.APP_STARTING), message


def restart_backoff(restarts: int) -> timedelta | None:
    """Delay before restart number `restarts` (1-based) of a crashed app; None once it is a crash loop."""
    if restarts > MAX_RESTARTS:
        return None
    return timedelta(seconds=min(30, 2 ** (restarts - 1)))


def last_traceback_line(lines: Iterable[str]) -> str | None:
    """The last line of the most recent Python traceback in `lines` (`TypeError: unhashable type: 'dict'`),
    None when there is none or it is not complete yet. A log prefix before the `Traceback` header (a
    timestamp, a logger name) is expected before the exception line too, and removed."""
    cause: str | None = None
    prefix: str | None = None  # inside a traceback: what its header line started with
    for raw in lines:
        line = raw.rstrip()
        at = line.find(TRACEBACK)
        if at != -1:
            prefix, cause = _body_prefix(line[:at]), None
            continue
        if prefix is None or not line.startswith(prefix):
            continue
        body = line[len(prefix):]
        if body and not body[0].isspace() and body[0] not in "|+^~":
            cause, prefix = body[:MAX_CAUSE], None  # the exception line ends the traceback
    return cause


def _body_prefix(header: str) -> str:
    """What the lines of a traceback start with, from what its header line has before `Traceback`: the
    same log prefix, or `  | ` for an exception group (`  + Exception Group Traceback ...`)."""
    group = "+ Exception Group "
    return header[: -len(group)] + "| " if header.endswith(group) else header


def start_problem(answer: int | None, path: str, cause: str | None) -> str | None:
    """What a starting app's stage message says: an error answer (with the log's cause), or the cause
    of an app that answers nothing while its log shows a traceback; None while it just is not up yet."""
    if answer is not None and answer >= 500:
        return f"The app answers HTTP {answer} on {path}: {cause}" if cause else f"The app answers HTTP {answer} on {path}; see its logs."
    if cause:
        return f"The app does not answer on its port yet; its log ends in a traceback: {cause}"
    return None


def start_timeout_message(problem: str | None, timeout: float) -> str:
    """Why a start gave up after startup_duration_timeout (the last problem seen, if any)."""
    waited = f"within {timeout:.0f} s (startup_duration_timeout)"
    if problem:
        return f"{problem}\nThe app was stopped: it did not answer successfully {waited}. Fix it and push, or restart it."
    return f"The app did not answer on its port {waited}."


def exited_message(code: int | None, cause: str | None, log_tail: str, *, before_answering: bool) -> str:
    """An app that exited: the traceback's last line first, then the exit code and the log's last lines."""
    how = f" with exit code {code}" if code is not None else ""
    what = f"The app exited{how} before answering on its port." if before_answering else f"The app exited{how}."
    text = f"{what} Last log lines:\n{log_tail}"
    return f"{cause}\n{text}" if cause else text
