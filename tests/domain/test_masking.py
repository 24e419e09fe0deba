"""domain.masking.Masker: every common printed form of a secret is hidden, ordinary text is left alone."""

from __future__ import annotations

import base64
import json
import textwrap
from urllib.parse import quote, quote_plus, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.domain.masking import MASK, MIN_LINE_LENGTH, NO_SECRETS, TOKEN_LENGTH, Masker, mask

TOKEN = "hf_Zq81xLmWv3Kd90PpTyUe"
PEM = ("-----BEGIN PRIVATE KEY-----\n"
       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
       "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
       "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
       "Ab==\n"
       "-----END PRIVATE KEY-----\n")
PEM_LINES = [line for line in PEM.splitlines() if len(line) >= MIN_LINE_LENGTH and "-----" not in line]


def forms(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "plain": value, "repr": repr(value), "json": json.dumps(value), "json-unicode": json.dumps(value, ensure_ascii=False),
        "json-in-dict": json.dumps({"token": value}), "dict-repr": repr({"token": value}), "bytes-repr": repr(raw),
        "quote": quote(value, safe=""), "quote-path": quote(value), "quote_plus": quote_plus(value),
        "query": urlencode({"token": value, "x": 1}), "base64": base64.b64encode(raw).decode(),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).decode(), "hex": raw.hex(),
        "basic-auth": "Authorization: Basic " + base64.b64encode(b"user:" + raw).decode(),
        "echo-base64": base64.b64encode(raw + b"\n").decode(),  # `echo $SECRET | base64`
        "base64-offset-2": base64.b64encode(b"ab" + raw + b"cd").decode(),
    }


@pytest.mark.parametrize("form", list(forms(TOKEN)))
def test_every_form_of_a_secret_is_masked(form: str) -> None:
    text = forms(TOKEN)[form]
    masked = Masker([TOKEN])(f"app says: {text} (done)")
    assert MASK in masked and masked.startswith("app says: ") and masked.endswith(" (done)")
    assert TOKEN not in masked and text not in masked


@pytest.mark.parametrize("form", ["plain", "repr", "json", "json-in-dict", "dict-repr", "bytes-repr", "quote", "base64",
                                  "echo-base64", "basic-auth"])
def test_multi_line_secret_in_its_one_line_forms(form: str) -> None:
    masked = Masker([PEM])(forms(PEM)[form])
    assert MASK in masked
    for line in PEM_LINES:
        assert line not in masked and repr(line)[1:-1] not in masked


def test_multi_line_secret_printed_as_is_is_masked_line_by_line() -> None:
    """A stream stores and masks each line on its own: no line of the key survives."""
    masker = Masker([PEM])
    output = f"loading key\n{PEM}key loaded\n"
    masked = [masker(line) for line in output.splitlines()]
    assert masked[0] == "loading key" and masked[-1] == "key loaded"
    for line in [*PEM_LINES, "Ab=="]:
        assert all(line not in m for m in masked), line


def test_multi_line_secret_indented_or_with_crlf() -> None:
    masker = Masker([PEM])
    indented = textwrap.indent(PEM, "    ")
    crlf = PEM.replace("\n", "\r\n")
    for text in (indented, crlf):
        assert all(line not in masker(text) for line in PEM_LINES)
    crlf_masker = Masker([crlf])  # the secret itself stored with CRLF, printed with LF
    assert all(line not in crlf_masker(PEM) for line in PEM_LINES)


def test_pieces_of_a_secret_at_line_edges() -> None:
    """Output wrapped or split around a newline, or a log tail that starts in the middle of a secret."""
    masker = Masker([TOKEN])
    assert masker(f"token={TOKEN[:10]}") == f"token={MASK}"
    assert masker(f"{TOKEN[7:]} was the token") == f"{MASK} was the token"
    assert masker(TOKEN[3:15]) == MASK  # a whole line that is a piece of it
    message = f"The app exited. Last log lines:\n{TOKEN[5:]}\nTraceback (most recent call last):"
    assert masker(message) == f"The app exited. Last log lines:\n{MASK}\nTraceback (most recent call last):"
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(PEM.encode()).decode(), 76))  # `base64` wraps at 76
    encoded = base64.b64encode(PEM.encode()).decode()
    masked = Masker([PEM])(wrapped)
    assert all(line == MASK for line in masked.splitlines()) and encoded[:40] not in masked


def test_pieces_shorter_than_the_minimum_stay() -> None:
    masker = Masker([TOKEN])
    assert masker(f"ends with {TOKEN[:5]}") == f"ends with {TOKEN[:5]}"
    assert masker("hf_") == "hf_"


def test_overlapping_and_nested_secrets_leave_nothing_visible() -> None:
    a, b = "alpha-beta-gamma", "gamma-delta-epsilon"
    masked = Masker([a, b])(f"x {a[:-5]}gamma-delta-epsilon y")
    assert masked == f"x {MASK} y"
    inner, outer = "secret-inner-1", "prefix-secret-inner-1-suffix"
    assert Masker([inner, outer])(f"[{outer}] [{inner}]") == f"[{MASK}] [{MASK}]"


def test_a_secret_containing_the_mask_does_not_reappear() -> None:
    value = "ab***cd-long-enough"
    text = f"ab{value}cd-long-enough"
    masked = Masker([value])(text)
    assert value not in masked


def test_short_secrets_are_masked_only_as_whole_tokens() -> None:
    masker = Masker(["x9k"])
    assert masker("KEY=x9k") == f"KEY={MASK}"
    assert masker("'x9k'") == f"'{MASK}'"
    assert masker("box9kz and x9kx") == "box9kz and x9kx"  # inside words: masking would reveal it and shred logs
    assert Masker(["the"])("other theme") == "other theme"


def test_values_below_the_minimum_and_empty_lists_change_nothing() -> None:
    for secrets in ([], [""], ["a"], ["ab"]):
        masker = Masker(secrets)
        assert not masker and masker("a ab abc") == "a ab abc"
    assert not NO_SECRETS and NO_SECRETS("anything") == "anything"
    assert Masker(["abc"]) and mask("x abc", ["abc"]) == f"x {MASK}"


def test_ordinary_output_is_left_alone() -> None:
    masker = Masker([TOKEN, PEM, "x9k"])
    text = "Running on local URL:  http://0.0.0.0:7860\n-----\n}\n\nTo create a public link, set `share=True`"
    assert masker(text) == text


# ----------------------------------------------------------------------------- properties

SECRET_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])
secrets_ = st.text(SECRET_CHARS, min_size=TOKEN_LENGTH, max_size=60).filter(lambda s: len(s.strip()) >= TOKEN_LENGTH)
surroundings = st.text(st.sampled_from(" .,:;!?()[]{}<>|#@^~`"), max_size=20)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(secret=secrets_, before=surroundings, after=surroundings)
def test_no_form_of_a_random_secret_survives(secret: str, before: str, after: str) -> None:
    masker = Masker([secret])
    for name, form in forms(secret).items():
        masked = masker(before + form + after)
        assert secret not in masked, name
        if name not in ("basic-auth", "base64-offset-2", "echo-base64", "query", "json-in-dict", "dict-repr"):
            assert form not in masked, name


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=TOKEN_LENGTH, max_size=30),
                       min_size=20, max_size=25, unique=True))
def test_many_secrets_are_masked_as_each_alone(values: list[str]) -> None:
    """Past REGEX_FORMS a Masker looks forms up by prefix instead of one regex: the same output."""
    many = Masker(values)
    assert many._by_prefix and many._anywhere is None
    for value in values:
        alone = Masker([value])
        assert alone._anywhere is not None and not alone._by_prefix
        for form in forms(value).values():
            text = f"x {form} y"
            if not any(other != value and other in text for other in values):
                assert many(text) == alone(text), form


@settings(max_examples=200)
@given(lines=st.lists(st.text(st.characters(codec="ascii", categories=("L", "N", "P", "S")), min_size=1, max_size=64),
                      min_size=2, max_size=8))
def test_no_line_of_a_random_multi_line_secret_survives_a_line_stream(lines: list[str]) -> None:
    secret = "\n".join(lines)
    masker = Masker([secret])
    for output_line in (masker(line) for line in f"start\n{secret}\nend".splitlines()):
        for line in lines:
            if len(line) >= MIN_LINE_LENGTH:
                assert line not in output_line


@settings(max_examples=200)
@given(secret=st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=TOKEN_LENGTH, max_size=40),
       text=st.text(st.sampled_from(" .,:;!?()[]-_'\"\n"), max_size=200))
def test_text_without_the_secret_is_unchanged(secret: str, text: str) -> None:
    assert Masker([secret])(text) == text
