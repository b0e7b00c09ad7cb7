"""Property tests of :func:`msc.protocol.redact.redact` (PROTOCOL.md §7, issue 13 item 2).

Generated logons and password changes in every case, with every separator, with or without
header, OIF and TAF, truncated anywhere, with non-ASCII letters and escaped bytes: the secret
never survives, the user ID does, and redaction is idempotent and never raises.
"""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from msc.protocol.message import decode_lossy
from msc.protocol.redact import MARK, is_secret_word, redact


def props(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


ALNUM = string.ascii_uppercase + string.digits
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))

# Separators a person or a broken client may put between the parts (ASCII, runs of them,
# non-ASCII spaces and full stops, and an escaped non-breaking space as decode_lossy shows it).
SEPARATORS = (".", " ", "/", ",", "-", ";", "\t", "  ", " . ", "..", "\u3000", "\uff0e", "\u00a0", "\\xc2\\xa0")
LOGON_SPELLINGS = ("LOGON", "logon", "Logon", "LoGoN", "LOGIN", "login", "SignOn", "LOG ON", "log-in",
                   "\uff2c\uff2f\uff27\uff2f\uff2e", "\\xef\\xbc\\xac\\xef\\xbc\\xaf\\xef\\xbc\\xa7\\xef\\xbc\\xaf\\xef\\xbc\\xae")
PWD_SPELLINGS = ("PWD", "pwd", "Pwd", "PASSWD", "password", "Password", "PASSCODE", "\uff30\uff37\uff24")


def case_mix(draw, word: str) -> str:
    if "\\" in word:
        return word  # an escaped byte sequence as decode_lossy writes it (lower-case \\xNN)
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.swapcase() if f and c.isascii() else c for c, f in zip(word, flips, strict=True))


header_st = st.text(ALNUM, min_size=4, max_size=10)
# A user ID with at least one letter (an all-digit one is ambiguous with an OTP: see redact).
user_st = st.text(ALNUM, min_size=6, max_size=6).filter(lambda u: not u.isdigit())
otp_st = st.text(string.digits, min_size=6, max_size=6)
password_st = st.text(PRINTABLE + "äöüßéñ€\u3000", min_size=8, max_size=40).filter(lambda p: p.strip(" .\t") != "")


@st.composite
def logon_text(draw):
    """(text, kept prefix, password, otp, the text up to the key) of a mangled logon."""
    sep = draw(st.sampled_from(SEPARATORS))
    seps = [sep if draw(st.booleans()) else draw(st.sampled_from(SEPARATORS)) for _ in range(6)]
    word = case_mix(draw, draw(st.sampled_from(LOGON_SPELLINGS)))
    parts = []
    if draw(st.booleans()):
        parts += [draw(header_st), seps[0]]
    if draw(st.booleans()):
        parts += ["*" + draw(user_st), seps[1]]
    if draw(st.booleans()):
        parts += ["#" + draw(st.sampled_from(["C0A8010A", "7F000001", "C0-A8-01-0A", "FE80:0:0:1"])), seps[2]]
    user = draw(user_st)
    parts += [word, seps[3], case_mix(draw, user)]
    keyed = "".join(parts[:-2])  # the text up to and with the key
    kept = "".join(parts)
    otp = draw(st.one_of(st.just("-"), otp_st))
    password = draw(password_st)
    text = kept + seps[4] + otp + seps[5] + password
    # The user ID is kept only from a well-formed LOGON body (PROTOCOL.md §2): '.USERID.OTP.PASSWORD',
    # a user ID of the grammar; else nothing after the key (redact's rule 3, fail safe).
    well_formed = (seps[3] == seps[4] == seps[5] == "." and re.fullmatch("[A-Z0-9]{6}", parts[-1]) is not None
                   and password.strip("\r\n\x0c\x7f") != "")
    return text, (kept if well_formed else keyed), password, otp, keyed


def redacted_at_or_before(out: str, kept: str) -> bool:
    """Is ``out`` the text cut at the user ID (or, for a password change, the key) plus the mark?

    A shorter cut is right only when a field before the key is itself a key word (a header
    such as ``0PWD`` or ``LOGON`` followed by another key): the first key is taken, nothing
    after it survives — no secret can leak, the user ID may be lost.
    """
    if out == kept + MARK:
        return True
    if not out.endswith(MARK) or not kept.startswith(out[: -len(MARK)]):
        return False
    return any(is_secret_word(w) for w in re.findall(r"[^\W_]+", out[: -len(MARK)]))


@props(500)
@given(logon_text())
def test_a_mangled_logon_keeps_the_user_and_loses_the_secrets(case):
    text, kept, password, otp, _keyed = case
    out = redact(text)
    assert redacted_at_or_before(out, kept), out
    assert redact(out) == out


@props(500)
@given(logon_text(), st.data())
def test_a_truncated_logon_never_shows_a_part_of_its_secrets(case, data):
    text, kept, _password, _otp, keyed = case
    cut = data.draw(st.integers(len(kept), len(text)))
    t = text[:cut]
    out = redact(t)
    # Whatever the cut, what follows the user ID (or the key, once the body is cut short and so
    # no longer well-formed) is the fixed mark or nothing at all.
    assert out == t or redacted_at_or_before(out, kept) or redacted_at_or_before(out, keyed), out
    if out == t:
        assert t[len(keyed):].strip(" .\t") == ""


@st.composite
def pwd_text(draw):
    sep = draw(st.sampled_from(SEPARATORS))
    word = case_mix(draw, draw(st.sampled_from(PWD_SPELLINGS)))
    head = ""
    if draw(st.booleans()):
        head = draw(header_st) + draw(st.sampled_from(SEPARATORS))
    if draw(st.booleans()):
        head += "*" + draw(user_st) + sep
    old, new = draw(password_st), draw(password_st)
    return head + word, head + word + sep + old + draw(st.sampled_from(SEPARATORS)) + new, old, new


@props(400)
@given(pwd_text())
def test_a_mangled_password_change_loses_both_passwords(case):
    kept, text, _old, _new = case
    out = redact(text)
    assert redacted_at_or_before(out, kept), out
    assert redact(out) == out


@props(400)
@given(st.text(max_size=300))
def test_any_text_is_itself_or_a_prefix_and_the_mark(text):
    out = redact(text)
    assert out == text or (out.endswith(MARK) and text.startswith(out[: -len(MARK)]))
    assert redact(out) == out


@props(500)
@given(st.binary(max_size=300))
def test_any_payload_on_the_rejected_path(payload):
    text = decode_lossy(payload)
    out = redact(text)
    assert redact(out) == out


@props(500)
@given(header_st, st.sampled_from(["QW", "QV", "QH", "DQ", "RQ", "AM", "YQ"]),
       st.text(PRINTABLE, max_size=80))
def test_other_traffic_is_not_altered(header, mke, rest):
    text = f"{header}.{mke}.CA0130000.{rest}"
    assume(not any(w in header.lower() for w in ("logon", "login", "signon", "signin", "pwd", "passw", "passcode")))
    assume(header.lower() not in ("pass", "pw", "pin"))
    assert redact(text) == text
