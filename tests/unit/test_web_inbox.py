"""The operator inbox's reading of outputs (msc.web.inbox.classify): answers linked by reference,
notices, parts, and the hits and hit confirmation requests a dispatcher must not miss."""

from __future__ import annotations

import pytest

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
