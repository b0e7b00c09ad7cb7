"""The web console's one-time password field (msc.web.logon.one_time_password): like ``msc
terminal``'s prompt, only a code (6 digits, spaces allowed) or nothing is taken; anything else —
most often the password typed in the wrong field — is refused before the logon check, so it is
neither sent to the switch nor counted toward a lockout (the e2e in tests/e2e/test_web_console.py
shows the same at the HTTP API and that the field is obscured in Chromium)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc.web.logon import NOT_A_CODE, one_time_password

SETTINGS = settings(max_examples=int(os.environ.get("MSC_PROP_EXAMPLES", "150")), deadline=None,
                    derandomize=os.environ.get("MSC_PROP_RANDOM") is None, database=None)


@pytest.mark.parametrize(("typed", "code"), [
    ("", None), ("-", None), ("   ", None), (" - ", None),      # no code: an account without TOTP
    ("123456", "123456"), ("000000", "000000"),
    ("123 456", "123456"), (" 123456 ", "123456"), ("12 34 56", "123456"), ("123\t456", "123456"),
])
def test_a_code_or_nothing_is_taken(typed, code):
    assert one_time_password(typed) == code


@pytest.mark.parametrize("typed", [
    "correct horse battery", "Secret-1", "hunter2",              # a password typed in the wrong field
    "123456abc", "abc123456", "123456!",                          # a password that starts/ends like a code
    "12345", "1234567", "123 4567", "12345 ",                     # too short, too long
    "12345-6", "123.456", "+12345", "-123456", "--",              # signs and separators
    "１２３４５６", "١٢٣٤٥٦", "12345\u00b2",                        # non-ASCII digits (str.isdigit would pass them)
    "123456\x00", "\x00", "123456\n\n-",
    123456, None, True, ["123456"], {"otp": "123456"},            # not a JSON string
])
def test_anything_else_is_refused_with_a_clear_message(typed):
    with pytest.raises(ValueError) as exc:
        one_time_password(typed)
    assert str(exc.value) == NOT_A_CODE
    assert "not a one-time password" in NOT_A_CODE and "6 digits" in NOT_A_CODE


@SETTINGS
@given(st.text(max_size=40))
def test_any_text_is_a_code_nothing_or_refused(typed):
    try:
        code = one_time_password(typed)
    except ValueError:
        compact = "".join(typed.split())
        assert compact not in ("", "-") and not (len(compact) == 6 and compact.isascii() and compact.isdigit())
        return
    if code is None:
        assert "".join(typed.split()) in ("", "-")
    else:
        assert len(code) == 6 and code.isascii() and code.isdigit() and code == "".join(typed.split())


@SETTINGS
@given(st.from_regex(r"[0-9]{6}", fullmatch=True), st.lists(st.sampled_from([" ", "\t"]), max_size=3), st.data())
def test_a_code_grouped_by_spaces_is_the_code(digits, spaces, data):
    typed = digits
    for sp in spaces:
        i = data.draw(st.integers(0, len(typed)))
        typed = typed[:i] + sp + typed[i:]
    assert one_time_password(typed) == digits
