"""What a starting app's stage message says: the traceback's last line, the app's answer, timeouts, exits."""

from __future__ import annotations

import pytest

from controller.domain.lifecycle import (
    MAX_CAUSE,
    Observed,
    derive_stage,
    exited_message,
    last_traceback_line,
    start_problem,
    start_timeout_message,
)
from controller.domain.stages import Stage

GRADIO_500 = """\
* Running on local URL:  http://0.0.0.0:7860
ERROR:    Exception in ASGI application
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/uvicorn/protocols/http/h11_impl.py", line 404, in run_asgi
    result = await app(  # type: ignore[func-returns-value]
             ^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/gradio/routes.py", line 410, in main
    gradio_api_info = api_info(False)
TypeError: unhashable type: 'dict'
INFO:     127.0.0.1:50312 - "GET / HTTP/1.1" 500 Internal Server Error"""

CHAINED = """\
Traceback (most recent call last):
  File "app.py", line 2, in <module>
    import torch
ModuleNotFoundError: No module named 'torch'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "app.py", line 4, in <module>
    raise RuntimeError("install torch")
RuntimeError: install torch"""

SYNTAX = """\
  File "/home/user/app/app.py", line 3
    x = (
        ^
SyntaxError: '(' was never closed"""

PREFIXED = """\
web-1  | Traceback (most recent call last):
web-1  |   File "app.py", line 1, in <module>
web-1  | KeyError: 'HF_TOKEN'
web-1  | listening"""

GROUP = """\
  + Exception Group Traceback (most recent call last):
  |   File "<string>", line 2, in <module>
  | ExceptionGroup: two (2 sub-exceptions)
  +-+---------------- 1 ----------------
    | ValueError: a
    +---------------- 2 ----------------
    | TypeError: b
    +------------------------------------"""


@pytest.mark.parametrize(("log", "cause"), [
    (GRADIO_500, "TypeError: unhashable type: 'dict'"),
    (CHAINED, "RuntimeError: install torch"),
    ("Traceback (most recent call last):\n" + SYNTAX, "SyntaxError: '(' was never closed"),
    (PREFIXED, "KeyError: 'HF_TOKEN'"),
    (GROUP, "ExceptionGroup: two (2 sub-exceptions)"),
    (CHAINED + "\n" + GRADIO_500, "TypeError: unhashable type: 'dict'"),  # the most recent one
])
def test_last_traceback_line_finds_the_exception_of_the_most_recent_traceback(log: str, cause: str) -> None:
    assert last_traceback_line(log.splitlines()) == cause


@pytest.mark.parametrize("log", [
    "",
    "* Running on local URL:  http://0.0.0.0:7860\nloading model...",
    SYNTAX,  # no header: not a traceback we can trust
    "Traceback (most recent call last):\n  File \"app.py\", line 1, in <module>\n    boom()",  # not written out yet
    CHAINED + "\nTraceback (most recent call last):\n  File \"app.py\", line 9, in <module>",  # the newest is open
])
def test_no_cause_without_a_complete_traceback(log: str) -> None:
    assert last_traceback_line(log.splitlines()) is None


def test_a_huge_exception_line_is_cut() -> None:
    cause = last_traceback_line(["Traceback (most recent call last):", "ValueError: " + "x" * 10_000])
    assert cause is not None and len(cause) == MAX_CAUSE


def test_start_problem_names_the_answer_and_the_cause() -> None:
    cause = "TypeError: unhashable type: 'dict'"
    assert start_problem(500, "/", cause) == "The app answers HTTP 500 on /: TypeError: unhashable type: 'dict'"
    assert start_problem(502, "/health", None) == "The app answers HTTP 502 on /health; see its logs."
    assert start_problem(None, "/", cause) is not None and cause in str(start_problem(None, "/", cause))
    assert start_problem(None, "/", None) is None  # still loading: nothing to say


def test_timeout_keeps_the_reason() -> None:
    problem = "The app answers HTTP 500 on /: TypeError: unhashable type: 'dict'"
    message = start_timeout_message(problem, 20)
    assert message.startswith(problem) and "20 s (startup_duration_timeout)" in message
    assert "did not answer" in start_timeout_message(None, 1800)


def test_exit_message_puts_the_traceback_line_first() -> None:
    message = exited_message(1, "KeyError: 'HF_TOKEN'", "exited with code 1\n...", before_answering=True)
    assert message.splitlines()[0] == "KeyError: 'HF_TOKEN'"
    assert "exited with exit code 1 before answering" in message and message.endswith("...")
    assert exited_message(None, None, "tail", before_answering=False) == "The app exited. Last log lines:\ntail"


def _observed(**changes: object) -> Observed:
    base = dict(desired="running", has_head=True, build_status="succeeded", build_error_stage=None,
                build_error=None, serving=False, wanted_state="starting", wanted_message=None)
    return Observed(**{**base, **changes})  # type: ignore[arg-type]


def test_a_start_in_progress_shows_its_problem() -> None:
    problem = "The app answers HTTP 500 on /: TypeError: unhashable type: 'dict'"
    assert derive_stage(_observed()) == (Stage.APP_STARTING, None)
    assert derive_stage(_observed(wanted_message=problem)) == (Stage.APP_STARTING, problem)
    assert derive_stage(_observed(wanted_message=problem, serving=True)) == (Stage.RUNNING_APP_STARTING, problem)
    assert derive_stage(_observed(wanted_state="failed", wanted_message=problem)) == (Stage.RUNTIME_ERROR, problem)
    assert derive_stage(_observed(wanted_state="stopped", wanted_message="old")) == (Stage.APP_STARTING, None)
