"""The operator inbox's reading of outputs (msc.web.inbox.classify): answers linked by reference,
notices, parts, and the hits and hit confirmation requests a dispatcher must not miss."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msc.protocol.message import parse_notice
from msc.web.inbox import classify

REFS = frozenset({"AB12C0", "AB12C1"})

CASES = [
    # payload, kind, ref, alert, code, part
    (b"ICS1AB12C0.QW.CA0130000.NO NCIC WANT.NAM/SMITH, JOHN.DOB/19800101", "answer", "AB12C0", None, None, None),
    (b"ICS1AB12C0.QW.CA0130000.NCIC WANTED PERSON HIT.NAM/DOE, JOHN.SEX/M\r\nWARNING - CONFIRM", "answer", "AB12C0",
     "hit", None, None),
    (b"ICS1AB12C1.QV.CA0130000.NCIC STOLEN VEHICLE HIT.LIC/ABC123", "answer", "AB12C1", "hit", None, None),
    (b"ICS1AB12C0.QW.CA0130000.NO NCIC WANT.NAM/HIT, PERSON.DOB/19800202", "answer", "AB12C0", None, None, None),
    (b"ICS1AB12C0.QW.CA0130000.NO HIT.NAM/DOE, JANE", "answer", "AB12C0", None, None, None),
    (b"ICS1AB12C0.QW.CA0130000.HITCH TRAILER REGISTERED", "answer", "AB12C0", None, None, None),
    (b"ICS1AB12C0.MSC.E303 NO RESPONSE FROM CLETS WITHIN 30 S", "notice", "AB12C0", None, "E303", None),
    (b"ICS1AB12C0.MSC.PART 2/3.QR.CA0130000.CRIMINAL HISTORY", "answer", "AB12C0", None, None, [2, 3]),
    (b"ICS1.YQ.CA0130000.RTY/WP.RNO/1.PRI/U.NAM/DOE, JOHN.NIC/W123456789", "unsolicited", None, "confirm", None, None),
    (b"ICS1.$.H.CA0130000.HIT NOTIFICATION.NAM/ROE, RICHARD.NIC/W1", "unsolicited", None, "hit", None, None),
    (b"ICS1.$.L.CA0130000.LOCATE.NAM/ROE, RICHARD", "unsolicited", None, None, None, None),
    (b"ICS1.YR.CA0130000.HIT CONFIRMED.NIC/W1", "unsolicited", None, None, None, None),
    (b"ICS1.AM.CA0130000.ECC1.TXT ROAD CLOSED", "unsolicited", None, None, None, None),
    (b"ICS1ZZZZZZ.QW.CA0130000.NCIC WANTED PERSON HIT.NAM/X", "unsolicited", None, "hit", None, None),  # not our ref
    (b"ICS2AB12C0.QW.CA0130000.NO NCIC WANT", "unsolicited", None, None, None, None),  # another mnemonic
    (b"ICS1AB12C0.QW.CA0130000.<1B>[2J NO NCIC WANT", "answer", "AB12C0", None, None, None),
]


@pytest.mark.parametrize("payload,kind,ref,alert,code,part", CASES)
def test_classify(payload, kind, ref, alert, code, part):
    out = classify(payload, "ICS1", REFS)
    assert (out["kind"], out["ref"], out["alert"], out["code"], out["part"]) == (kind, ref, alert, code, part)


def test_text_after_the_header_is_kept_whole():
    out = classify(b"ICS1AB12C0.QR.CA0130000.X\r\nARR/2019 AGY/CAPD0001", "ICS1", REFS)
    assert out["header"] == "ICS1AB12C0" and out["text"] == "QR.CA0130000.X\r\nARR/2019 AGY/CAPD0001"


# -- msc's notices: the switch's one reader (msc.protocol.message.parse_notice) ------------------
# The inbox had a reader of its own, with no boundary after the three digits: ``MSC.E3021`` was
# taken as an E302 notice, ``MSC.E302-X`` too. What ``msc_notice`` writes — HEADER "." "MSC." E and
# exactly three digits [" " reason] — is a notice, whatever the code (an upstream's E1xx/E2xx passes
# through); anything else is an answer (or unsolicited), and an ``MSC.PART`` is never a notice.

NOTICES = [
    # payload, kind, code, part
    (b"ICS1AB12C0.MSC.E302 CLETS LINK LOST BEFORE THE ANSWER", "notice", "E302", None),
    (b"ICS1AB12C0.MSC.E302", "notice", "E302", None),  # no reason text: still the code
    (b"ICS1AB12C0.MSC.E501 ANSWER FROM CLETS COULD NOT BE RECORDED AND WAS NOT SENT AGAIN; REPEAT THE REQUEST",
     "notice", "E501", None),
    (b"ICS1AB12C0.MSC.E108 FIELD MALFORMED OR REQUIRED FIELD MISSING", "notice", "E108", None),  # upstream E1xx
    (b"ICS1AB12C0.MSC.E204 MNEMONIC NOT AUTHORIZED FOR THIS CATEGORY", "notice", "E204", None),  # upstream E2xx
    (b"ICS1AB12C0.MSC.E3021 FOUR DIGITS", "answer", None, None),
    (b"ICS1AB12C0.MSC.E302-X", "answer", None, None),
    (b"ICS1AB12C0.MSC.E30 TWO DIGITS", "answer", None, None),
    (b"ICS1AB12C0.msc.e302 lower case", "answer", None, None),
    (b"ICS1AB12C0.MSC.PART 1/2.MSC.E302 IS TEXT OF AN ANSWER", "answer", None, [1, 2]),
    (b"ICS1.MSC.E3021 NOT OURS, NOT A NOTICE", "unsolicited", None, None),
]


@pytest.mark.parametrize("payload,kind,code,part", NOTICES)
def test_notices_are_read_as_the_switch_writes_them(payload, kind, code, part):
    out = classify(payload, "ICS1", REFS)
    assert (out["kind"], out["code"], out["part"]) == (kind, code, part)


@given(st.from_regex(r"[Ee][0-9]{1,5}", fullmatch=True), st.sampled_from(["", " ", " REASON", "-X", "1", ".X"]))
def test_the_inbox_reads_notices_with_the_switch_reader(code, tail):
    """One reader: what ``parse_notice`` takes for a notice the inbox shows as one, with its code;
    nothing else."""
    payload = f"ICS1AB12C0.MSC.{code}{tail}"
    got = classify(payload.encode(), "ICS1", REFS)
    want = parse_notice(payload)
    assert (got["kind"], got["code"]) == (("notice", want[0]) if want else ("answer", None))
