"""Issue 12 items 1 and 2: the Nlets message form, line layout, and the byte policy of
PROTOCOL.md §1 in both directions — pure, bytes in and parsed values / bytes out.
"""

from __future__ import annotations

import pytest

from msc.journal.tokens import fields_of
from msc.protocol import (
    AdminText,
    Logoff,
    ProtocolError,
    Transaction,
    output_bytes,
    parse_input,
    parse_upstream,
    wire_text,
)

# --------------------------------------------------------------------------------------------
# 1. Nlets and state message forms (accepted, with what the parser reads)
# --------------------------------------------------------------------------------------------

# payload, ori, destinations, control, fields
NLETS_FORMS = [
    # the issue's two inputs
    (b"ICS1.DQ.CA0130000.NV.TXTOLN/N1234567", "CA0130000", ("NV",), (), (("OLN", "N1234567"),)),
    (b"ICS1.DQ.CA0130000.AZ,NV.TXTNAM/DOE, JOHN.DOB/19800101.SEX/M", "CA0130000", ("AZ", "NV"), (),
     (("NAM", "DOE, JOHN"), ("DOB", "19800101"), ("SEX", "M"))),
    # several keys, destination lists of state codes and ORIs mixed, optional control field
    (b"ICS1.RQ.CA0130000.AZ.TXT\r\nLIC/123456.LIT/PC", "CA0130000", ("AZ",), (),
     (("LIC", "123456"), ("LIT", "PC"))),
    (b"ICS1.RQ.CA0130000.AZ,NV0000000,OR.*RQ123.TXTLIC/7ABC123.LIY/2025.LIT/PC", "CA0130000",
     ("AZ", "NV0000000", "OR"), ("*RQ123",), (("LIC", "7ABC123"), ("LIY", "2025"), ("LIT", "PC"))),
    (b"ICS1.DQ.CA0130000.AZ, NV, TX.TXT\r\n\x7fRSN/N.NAM/SMITH, JOHN A.DOB/19800101.SEX/M", "CA0130000",
     ("AZ", "NV", "TX"), (), (("RSN", "N"), ("NAM", "SMITH, JOHN A"), ("DOB", "19800101"), ("SEX", "M"))),
    (b"ICS1.YQ.CA0130000.AZ0000000.TXT\r\nRTY/SS.PRI/R.OCA/10000000000.NIC/A111110000.\r\n"
     b"RNA/NLETS ANALYST.REM/PLS CONFIRM STILL STOLEN.", "CA0130000", ("AZ0000000",), (),
     (("RTY", "SS"), ("PRI", "R"), ("OCA", "10000000000"), ("NIC", "A111110000"), ("RNA", "NLETS ANALYST"),
      ("REM", "PLS CONFIRM STILL STOLEN"))),
    (b"ECC2.*EC0001.#C0A8010A.YR.CA0130100.AZ0000000.*HC42.TXT\r\nRTY/SS.CON/Y.NIC/A111110000.REM/CONFIRMED",
     "CA0130100", ("AZ0000000",), ("*HC42",),
     (("RTY", "SS"), ("CON", "Y"), ("NIC", "A111110000"), ("REM", "CONFIRMED"))),
    (b"ICS1.QH.CA0130000.NL.TXTNAM/DOE, JOHN.DOB/19800101.PUR/C.ATN/DET SMITH", "CA0130000", ("NL",), (),
     (("NAM", "DOE, JOHN"), ("DOB", "19800101"), ("PUR", "C"), ("ATN", "DET SMITH"))),
    (b"ICS1.IQ.CA0130000.TX,A1.*1.TXT NAM/DOE, JOHN.DOB/19800101.PUR/C.ATN/A", "CA0130000", ("TX", "A1"), ("*1",),
     (("NAM", "DOE, JOHN"), ("DOB", "19800101"), ("PUR", "C"), ("ATN", "A"))),
    # fields one per line (CR LF, LF alone, FF) with and without the '.' at the line end
    (b"ICS1.DQ.CA0130000.NV.TXT\r\nNAM/DOE, JOHN\r\nDOB/19800101\r\nSEX/M\r\n", "CA0130000", ("NV",), (),
     (("NAM", "DOE, JOHN"), ("DOB", "19800101"), ("SEX", "M"))),
    (b"ICS1.DQ.CA0130000.NV.TXT\nOLN/N1234567.\n", "CA0130000", ("NV",), (), (("OLN", "N1234567"),)),
    (b"ICS1.DQ.CA0130000.NV.TXT\fOLN/N1234567\f", "CA0130000", ("NV",), (), (("OLN", "N1234567"),)),
    # free text wrapped over lines continues the value; HT reads as a space
    (b"ICS1.YQ.CA0130000.CA0340000.TXTNIC/V123456789.REM/LINE ONE\r\nLINE TWO", "CA0130000", ("CA0340000",), (),
     (("NIC", "V123456789"), ("REM", "LINE ONE LINE TWO"))),
    (b"ICS1.DQ.CA0130000.NV.TXTNAM/DOE,\tJOHN.DOB/19800101", "CA0130000", ("NV",), (),
     (("NAM", "DOE, JOHN"), ("DOB", "19800101"))),
]


@pytest.mark.parametrize(("payload", "ori", "dests", "control", "fields"), NLETS_FORMS)
def test_nlets_forms_parse(payload, ori, dests, control, fields):
    inp = parse_input(payload)
    assert inp.body == Transaction(ori=ori, fields=fields, destinations=dests, control=control)
    assert inp.body.nlets
    # the text forwarded is the text as sent, byte for byte, after the inserted OIF and TAF
    assert payload.decode("ascii").endswith("." + inp.text) and inp.text.startswith(inp.mke + ".")
    assert inp.normalized("TS0001", "7F000001") == f"{inp.header}.*TS0001.#7F000001.{inp.text}"


# NCIC form with layout: the same fields as without it
NCIC_LAYOUT = [
    (b"ICS1.QV.CA0130000.LIC/7ABC123.LIS/CA\r\n", (("LIC", "7ABC123"), ("LIS", "CA"))),
    (b"ICS1.QV.CA0130000.LIC/7ABC123.LIS/CA\n", (("LIC", "7ABC123"), ("LIS", "CA"))),
    (b"ICS1.QV.CA0130000.LIC/7ABC123\r\nLIS/CA", (("LIC", "7ABC123"), ("LIS", "CA"))),
    (b"ICS1.QV.CA0130000.LIC/7ABC123.\r\nLIS/CA\r\n\x7f", (("LIC", "7ABC123"), ("LIS", "CA"))),
    (b"ICS1.QV.CA0130000.LIC/7ABC123\r\n.LIS/CA", (("LIC", "7ABC123"), ("LIS", "CA"))),
    (b"ICS1.QW.CA0130000.NAM/SMI\x7fTH, JOHN.DOB/19800101\f", (("NAM", "SMITH, JOHN"), ("DOB", "19800101"))),
    (b"ICS1.QW.CA0130000.\r\nNAM/SMITH, JOHN\r\nDOB/19800101", (("NAM", "SMITH, JOHN"), ("DOB", "19800101"))),
]


@pytest.mark.parametrize(("payload", "fields"), NCIC_LAYOUT)
def test_ncic_form_layout_is_not_data(payload, fields):
    inp = parse_input(payload)
    assert inp.body == Transaction(ori="CA0130000", fields=fields)
    assert not inp.body.nlets
    assert inp.text == payload.decode("ascii").split(".", 1)[1]  # kept as sent, layout and all


@pytest.mark.parametrize(
    ("payload", "dests", "control", "text"),
    [
        (b"ICS1.AM.CA0130000.NV0000000,AZ.*X1.TXT HELLO\r\n", ("NV0000000", "AZ"), ("*X1",), "HELLO\r\n"),
        (b"ICS1.AM.CA0130000.ICS2.TXT\r\nROAD CLOSED\r\n\tDETOUR VIA 8TH ST.\f", ("ICS2",), (),
         "\r\nROAD CLOSED\r\n\tDETOUR VIA 8TH ST.\f"),
        (b"ICS1.AM.CA0130000.ICS2, APB.TXT HI", ("ICS2", "APB"), (), "HI"),
    ],
)
def test_admin_message_forms(payload, dests, control, text):
    assert parse_input(payload).body == AdminText(ori="CA0130000", destinations=dests, text=text, control=control)


def test_trailing_layout_after_a_key_without_body():
    assert parse_input(b"ICS1.LOGOFF\r\n").body == Logoff()
    assert parse_input(b"ICS1.QW.CA0130000\r\n").body == Transaction(ori="CA0130000")


# --------------------------------------------------------------------------------------------
# Refusals of the new shapes: still a §6 code, never a stray exception
# --------------------------------------------------------------------------------------------

NLETS_REFUSED = [
    (b"ICS1.DQ.CA0130000.NV.OLN/N1234567", "E108"),  # destinations without TXT
    (b"ICS1.DQ.CA0130000.NV", "E108"),
    (b"ICS1.DQ.CA0130000.NV.AZ.TXTOLN/N1", "E108"),  # two destination lists
    (b"ICS1.DQ.CA0130000.NV,.TXTOLN/N1", "E108"),  # empty destination: NCIC field error
    (b"ICS1.DQ.CA0130000.NV.*.TXTOLN/N1", "E108"),  # empty control field
    (b"ICS1.DQ.CA0130000.NV.*ABCDEFGHIJK.TXTOLN/N1", "E108"),  # control field > 10
    (b"ICS1.DQ.CA0130000.NV.TXTOLN", "E108"),  # not TAG/value after TXT
    (b"ICS1.DQ.CA0130000.NV.TXTOLN/", "E108"),
    (b"ICS1.DQ.CA0130000.NV.TXTOLN/N1..SEX/M", "E108"),  # empty field inside a line
    (b"ICS1.DQ.CA0130000.N\rV.TXTOLN/N1", "E102"),  # control byte inside the destinations
    (b"ICS1.DQ.CA0130000.NV\r\n.TXTOLN/N1", "E102"),
    (b"ICS1.DQ.CA0130000.NV.*A\tB.TXTOLN/N1", "E102"),
    (b"ICS1.DQ.CA01\t30000.NV.TXTOLN/N1", "E102"),  # ... inside the ORI
    (b"ICS1.D\x7fQ.CA0130000.NV.TXTOLN/N1", "E102"),  # ... inside the key
    (b"ICS1.QW.CA0130000.NAM/SMITH.", "E108"),  # NCIC form: no final '.'
    (b"ICS1.QW.CA0130000.NAM/SMITH\r\n.", "E108"),
    (b"ICS1.QW.CA0130000.NAM/ \r\n", "E108"),  # blank value
    (b"ICS1.QW.CA0130000.\r\nSMITH", "E108"),  # a continuation with nothing to continue
]


@pytest.mark.parametrize(("payload", "code"), NLETS_REFUSED)
def test_nlets_refusals(payload, code):
    with pytest.raises(ProtocolError) as exc:
        parse_input(payload)
    assert exc.value.code == code


# --------------------------------------------------------------------------------------------
# 2. The byte policy, every C0 byte, DEL and the high half, both directions
# --------------------------------------------------------------------------------------------

ALLOWED = {0x09, 0x0A, 0x0C, 0x0D, 0x7F}
C0_AND_DEL = [*range(0x00, 0x20), 0x7F]
HIGH = list(range(0x80, 0x100))  # every byte of the high half


@pytest.mark.parametrize("byte", C0_AND_DEL + HIGH, ids=lambda b: f"0x{b:02X}")
def test_input_byte_in_the_text(byte):
    payload = b"ICS1.QV.CA0130000.LIC/7ABC123.LIS/CA" + bytes([byte]) + b"VIN/1HGCM82633A004352"
    if byte in ALLOWED:
        inp = parse_input(payload)
        assert inp.text.encode("ascii").endswith(bytes([byte]) + b"VIN/1HGCM82633A004352")
        lis = inp.body.get("LIS")
        if byte == 0x09:
            assert lis == "CA VIN/1HGCM82633A004352"  # HT is data (a space), not a separator
        elif byte == 0x7F:
            assert lis == "CAVIN/1HGCM82633A004352"  # DEL is ignored
        else:
            assert inp.body.fields == (("LIC", "7ABC123"), ("LIS", "CA"), ("VIN", "1HGCM82633A004352"))
    else:
        with pytest.raises(ProtocolError) as exc:
            parse_input(payload)
        assert exc.value.code == "E102"
        assert f"0x{byte:02X}" in exc.value.detail


@pytest.mark.parametrize("byte", C0_AND_DEL + HIGH, ids=lambda b: f"0x{b:02X}")
@pytest.mark.parametrize("where", ["header", "key", "ori", "dest", "oif"])
def test_input_byte_in_routing_fields_is_e102(byte, where):
    b = bytes([byte])
    payload = {
        "header": b"IC" + b + b"S1.DQ.CA0130000.NV.TXTOLN/N1",
        "key": b"ICS1.D" + b + b"Q.CA0130000.NV.TXTOLN/N1",
        "ori": b"ICS1.DQ.CA01" + b + b"30000.NV.TXTOLN/N1",
        "dest": b"ICS1.DQ.CA0130000.N" + b + b"V.TXTOLN/N1",
        "oif": b"ECC2.*EC0" + b + b"001.#C0A8010A.DQ.CA0130000.NV.TXTOLN/N1",
    }[where]
    with pytest.raises(ProtocolError) as exc:
        parse_input(payload)
    assert exc.value.code == "E102"


@pytest.mark.parametrize("byte", C0_AND_DEL + HIGH, ids=lambda b: f"0x{b:02X}")
def test_upstream_byte_is_never_refused(byte):
    payload = b"ICS1.QV.CA0130000.NO NCIC WANT" + bytes([byte]) + b"LIC/7TAB001"
    msg = parse_upstream(payload)
    assert (msg.dest, msg.mke, msg.ori) == ("ICS1", "QV", "CA0130000")
    assert wire_text(payload).encode("latin-1") == payload  # the journal keeps every byte
    out = output_bytes(wire_text(payload))
    if byte in ALLOWED:
        assert out == payload  # delivered unchanged
    else:
        assert out == b"ICS1.QV.CA0130000.NO NCIC WANT" + f"<{byte:02X}>".encode() + b"LIC/7TAB001"
    assert all(0x20 <= c < 0x7F or c in ALLOWED for c in out)


def test_upstream_issue_example_tab_and_form_feed():
    payload = b"ICS1.QV.CA0130000.NO NCIC WANT\tLIC/7TAB001\f"
    assert parse_upstream(payload).text == "QV.CA0130000.NO NCIC WANT\tLIC/7TAB001\f"
    assert output_bytes(wire_text(payload)) == payload
    assert ("LIC", "7TAB001") in fields_of(wire_text(payload))


def test_output_bytes_for_text_beyond_latin1():
    assert output_bytes("M\u00dcLLER \u20ac") == b"M<DC>LLER <E2><82><AC>"


# --------------------------------------------------------------------------------------------
# The search index reads fields after TXT exactly like other fields (item 1)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ICS1.*TS0001.#7F000001.DQ.CA0130000.NV.TXTOLN/N1234567", {("OLN", "N1234567")}),
        ("DQ.CA0130000.AZ,NV.TXTNAM/DOE, JOHN.DOB/19800101.SEX/M", {("NAM", "DOE,JOHN"), ("DOB", "19800101")}),
        ("RQ.CA0130000.AZ.*AB12.TXT\r\n\x7fLIC/123456.LIT/PC", {("LIC", "123456")}),
        ("RQ.CA0130000.AZ.TXT VIN/1HGCM82633A004352", {("VIN", "1HGCM82633A004352")}),
        ("QV.CA0130000.LIC/7ABC123\r\nVIN/1HGCM82633A004352\f", {("LIC", "7ABC123"), ("VIN", "1HGCM82633A004352")}),
        ("QW.CA0130000.NAM/SMI\x7fTH, JOHN.DOB/19800101", {("NAM", "SMITH,JOHN"), ("DOB", "19800101")}),
        ("QW.CA0130000.NAM/SMITH,\tJOHN", {("NAM", "SMITH,JOHN")}),
        # not fields: a tag glued to other letters, a TXT that is itself glued
        ("XTXTOLN/1.ATXT/2.AOLN/3", set()),
    ],
)
def test_search_tokens_after_txt_and_layout(text, expected):
    assert fields_of(text) == expected


def test_tokens_equal_for_both_forms():
    ncic = fields_of("ICS1.*TS0001.#7F000001.DQ.CA0130000.OLN/N1234567")
    nlets = fields_of("ICS1.*TS0001.#7F000001.DQ.CA0130000.NV.TXTOLN/N1234567")
    assert ncic == nlets == {("OLN", "N1234567")}


def test_printed_journal_report_shows_undeliverable_bytes_visibly():
    from msc.cli.journal import printable, text_block
    from msc.journal.records import Record

    text = "ICS1.QV.CA0130000.NO NCIC WANT\x1b[2J\x07\tLIC/7TAB001\r\n\xdc\f"
    assert printable(text) == "ICS1.QV.CA0130000.NO NCIC WANT<1B>[2J<07>\tLIC/7TAB001\n<DC>\f"
    rec = Record(seq=1, ts=0, kind="RECEIVED", direction="in", peer="clets", mnemonic="ICS1", user=None, taf=None,
                 ori=None, mke="QV", txn=None, code=None, purpose=None, requester=None, recipient=None, text=text)
    block = text_block(rec)
    assert "\x1b" not in block and "\x07" not in block and "<1B>[2J" in block
