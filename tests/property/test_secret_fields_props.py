"""No password or one-time password given in any field of a ``LOGON`` or ``PWD`` message —
well-formed or not — reaches the journal (newcomer trial: ``Pass.word-123`` typed at the
``User ID:`` prompt split the LOGON and ``ICS1.LOGON.PASS.*.*`` was journaled, PROTOCOL.md §7).

What the switch journals for a client's message is the text of :func:`journaled` — the parsed
message's :meth:`~msc.protocol.message.Input.journal_text` (accepted, or refused after parsing),
else the redacted payload (:func:`~msc.protocol.redact.redact`, refused by the parser): the two
paths of :meth:`msc.server.session.Session._message`. The only field kept in clear is a user ID of
the grammar in the user-ID slot of a well-formed LOGON: a secret that is itself such a user ID,
typed in that very slot, cannot be told from one, so the secrets generated here are not.
"""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msc.protocol.codes import ProtocolError
from msc.protocol.message import decode_lossy, parse_input
from msc.protocol.redact import redact

PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def journaled(payload: bytes) -> str:
    try:
        return parse_input(payload).journal_text()
    except ProtocolError:
        return redact(decode_lossy(payload))


def props(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# A password: printable, at least 4 characters, never a user ID of the grammar (6 upper-case
# letters and digits) — with a '.' or not (a '.' splits it over two fields, as in the trial).
password_st = st.text(PRINTABLE, min_size=4, max_size=24).filter(
    lambda p: re.fullmatch(r"[A-Z0-9]{6}", p) is None and p.strip("."))
otp_st = st.text(string.digits, min_size=6, max_size=6)
user_st = st.text(string.ascii_uppercase + string.digits, min_size=6, max_size=6)
field_st = st.one_of(user_st, st.just("-"), otp_st, st.text(PRINTABLE, max_size=12))


@st.composite
def secret_message(draw):
    """(payload, secrets, head, key, fields) — a LOGON or PWD with a password (and maybe an OTP) in any field."""
    key = draw(st.sampled_from(["LOGON", "PWD"]))
    head = draw(st.sampled_from(["ICS1", "ICS1A1", "ICS1.*TS0001", "ICS1.*TS0001.#C0A8010A"]))
    secrets = [draw(password_st)]
    code = draw(otp_st) if draw(st.booleans()) else None
    # (the other fields are not the secrets: a user ID 123456 and an OTP 123456 are one string)
    fields = draw(st.lists(field_st.filter(lambda f: f not in (secrets[0], code)), min_size=0, max_size=5))
    fields.insert(draw(st.integers(0, len(fields))), secrets[0])
    if code is not None:
        # Six digits are a user ID of the grammar too: not in the user-ID slot of a LOGON.
        lo = 1 if key == "LOGON" else 0
        fields.insert(draw(st.integers(min(lo, len(fields)), len(fields))), code)
        secrets.append(code)
    text = ".".join([head, key, *fields])
    return text.encode(), secrets, head, key, fields


@props(1500)
@given(secret_message())
def test_no_password_or_otp_in_any_field_reaches_the_journal(case):
    payload, secrets, head, key, fields = case
    out = journaled(payload)
    assert out.startswith(f"{head}.{key}"), (payload, out)
    rest = out[len(f"{head}.{key}"):]
    # After the key: nothing, the fixed mark, or a user ID of the grammar that was sent in the
    # user-ID slot of a well-formed LOGON — never a secret, nor a piece of one.
    if rest not in ("", ".*.*"):
        m = re.fullmatch(r"\.([A-Z0-9]{6})\.\*\.\*", rest)
        assert m is not None and key == "LOGON", (payload, out)
        assert m.group(1) == fields[0] and fields[0] not in secrets, (payload, out)
        assert re.fullmatch(r"[0-9]{6}|-", fields[1]) and len(fields) >= 3, (payload, out)


@props(300)
@given(st.sampled_from(["LOGON", "PWD"]), st.lists(st.text(PRINTABLE, min_size=1, max_size=12), max_size=6))
def test_only_a_grammar_user_id_of_a_well_formed_logon_is_kept(key, fields):
    payload = ".".join(["ICS1", key, *fields]).encode()
    out = journaled(payload)
    assert out.startswith("ICS1." + key), out
    rest = out[len("ICS1." + key):]
    if key == "PWD":
        assert rest in ("", ".*.*"), out
        return
    assert rest in ("", ".*.*") or re.fullmatch(r"\.[A-Z0-9]{6}\.\*\.\*", rest), out
    if rest not in ("", ".*.*"):
        user, otp = fields[0], fields[1]
        assert rest == f".{user}.*.*" and re.fullmatch(r"[0-9]{6}|-", otp), (payload, out)


def test_the_trial_texts():
    for typed in ("Pass.word-123", "demo-T4kdL0KLIhj6", "Hunter2Secret99", "PASS.WORD-123", "DEMO-T4KDL0KLIHJ6"):
        out = journaled(f"ICS1.LOGON.{typed}.-.demo-T4kdL0KLIhj6".encode())
        assert out == "ICS1.LOGON.*.*", out
