"""msc.protocol: the sans-IO wire codec against PROTOCOL.md §1–§3, §6 and §7.

Bytes in, frames / parsed messages / reject codes out. No I/O, no event loop.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from msc.protocol import (
    ACK,
    ALL_CODES,
    DEFAULT_MAX_FRAME,
    HEARTBEAT,
    MSG,
    NAK,
    AdminText,
    Bind,
    Frame,
    Framer,
    FramingError,
    Input,
    Logoff,
    Logon,
    PasswordChange,
    ProtocolError,
    Reject,
    Transaction,
    UpstreamMessage,
    banner,
    encode_frame,
    format_output,
    format_pairs,
    framing,
    msc_notice,
    parse_input,
    parse_nak,
    parse_pairs,
    parse_upstream,
    redact,
)

HEAD = struct.Struct(">IBI")
MAX_XID = 0xFFFFFFFF


def raw_frame(length: int, ftype: int, xid: int = 0, payload: bytes = b"") -> bytes:
    """A frame header written by hand (independent of encode_frame), for malformed frames."""
    return HEAD.pack(length, ftype, xid) + payload


def reject_code(payload: bytes) -> str:
    with pytest.raises(ProtocolError) as exc:
        parse_input(payload)
    return exc.value.code


# --------------------------------------------------------------------------------------------
# 1. Link framing (§1)
# --------------------------------------------------------------------------------------------

FRAME_CASES = [
    pytest.param(MSG, 1, b"ICS1.QW.CA0130000.NAM/SMITH, JOHN", id="M"),
    pytest.param(ACK, 1, b"MNE/ECM3.USR/TS0001", id="A-pairs"),
    pytest.param(ACK, 2, b"", id="A-empty"),
    pytest.param(NAK, 3, b"E204 MNEMONIC NOT AUTHORIZED FOR CORI", id="N"),
    pytest.param(HEARTBEAT, 4, b"", id="H"),
    pytest.param(MSG, 0, b"", id="M-empty-xid0"),
    pytest.param(MSG, MAX_XID, b"x", id="M-max-xid"),
]


@pytest.mark.parametrize(("ftype", "xid", "payload"), FRAME_CASES)
def test_encode_decode_each_frame_type(ftype, xid, payload):
    wire = encode_frame(ftype, xid, payload)
    # The layout of §1, checked by hand: uint32 length (bytes after it), type, uint32 xid.
    assert wire == struct.pack(">I", len(payload) + 5) + bytes([ftype]) + struct.pack(">I", xid) + payload
    framer = Framer()
    assert framer.feed(wire) == [Frame(ftype, xid, payload)]
    assert framer.buffered == 0
    assert framer.failed is None


def test_frame_type_constants_are_the_spec_letters():
    assert (MSG, ACK, NAK, HEARTBEAT) == (ord("M"), ord("A"), ord("N"), ord("H"))
    assert Frame(MSG, 1, b"").kind == "M"
    assert Frame(HEARTBEAT, 1, b"").kind == "H"
    assert DEFAULT_MAX_FRAME == 32768


def test_frame_helpers():
    assert framing.message(7, b"ICS1.LOGOFF") == encode_frame(MSG, 7, b"ICS1.LOGOFF")
    assert framing.ack(7) == encode_frame(ACK, 7, b"")
    assert framing.ack(7, b"MNE/ICS1") == encode_frame(ACK, 7, b"MNE/ICS1")
    assert framing.nak(7, "E204", "MNEMONIC NOT AUTHORIZED") == encode_frame(
        NAK, 7, b"E204 MNEMONIC NOT AUTHORIZED"
    )
    assert framing.heartbeat(9) == encode_frame(HEARTBEAT, 9, b"")


def test_encode_frame_rejects_unknown_type_as_programming_error():
    with pytest.raises(ValueError):
        encode_frame(ord("X"), 1, b"")


def test_framer_rejects_max_frame_below_minimum():
    with pytest.raises(ValueError):
        Framer(4)
    Framer(5)  # the smallest frame (empty payload) must fit


def _stream() -> tuple[bytes, list[Frame]]:
    frames = [
        Frame(MSG, 1, b"ICS1.LOGON.TS0001.-.correct horse battery"),
        Frame(ACK, 1, b""),
        Frame(HEARTBEAT, 2, b""),
        Frame(NAK, 2, b"E106 MESSAGE KEY MISSING OR MALFORMED"),
        Frame(MSG, MAX_XID, b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19700101"),
        Frame(ACK, 0x01020304, b"MNE/ECM3.USR/TS0001"),
    ]
    return b"".join(encode_frame(*f) for f in frames), frames


def test_stream_split_at_every_boundary_yields_same_frames():
    wire, frames = _stream()
    for cut in range(len(wire) + 1):
        framer = Framer()
        got = framer.feed(wire[:cut])
        got += framer.feed(wire[cut:])
        assert got == frames, cut
        assert framer.buffered == 0


def test_stream_fed_byte_by_byte_yields_same_frames():
    wire, frames = _stream()
    framer = Framer()
    got: list[Frame] = []
    for i in range(len(wire)):
        got += framer.feed(wire[i : i + 1])
    assert got == frames
    assert framer.buffered == 0


def test_many_frames_in_one_chunk():
    frames = [Frame(MSG, i, f"ICS1.QW.CA0130000.NAM/N{i}".encode()) for i in range(1, 501)]
    wire = b"".join(encode_frame(*f) for f in frames)
    framer = Framer()
    assert framer.feed(wire) == frames
    assert framer.buffered == 0
    assert framer.feed(b"") == []


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4])
def test_length_below_five_is_e101(length):
    framer = Framer()
    with pytest.raises(FramingError) as exc:
        framer.feed(raw_frame(length, MSG, 1))
    assert exc.value.code == "E101"
    assert exc.value.reject is Reject.E101
    assert isinstance(exc.value, ProtocolError)


@pytest.mark.parametrize(("max_frame", "length"), [(32768, 32769), (100, 101), (100, 0xFFFFFFFF)])
def test_length_above_max_frame_is_e101(max_frame, length):
    framer = Framer(max_frame)
    with pytest.raises(FramingError) as exc:
        framer.feed(raw_frame(length, MSG, 1))  # rejected from the header alone
    assert exc.value.code == "E101"
    assert framer.failed is not None


@pytest.mark.parametrize("ftype", [b"X", b"m", b"a", b"\x00", b"\xff", b"Z"])
def test_unknown_type_byte_is_e101(ftype):
    framer = Framer()
    with pytest.raises(FramingError) as exc:
        framer.feed(raw_frame(5, ftype[0], 1))
    assert exc.value.code == "E101"


@pytest.mark.parametrize("max_frame", [5, 6, 100, DEFAULT_MAX_FRAME])
def test_frame_of_exactly_max_frame_is_accepted(max_frame):
    payload = b"A" * (max_frame - 5)
    wire = encode_frame(MSG, 1, payload)
    assert struct.unpack(">I", wire[:4])[0] == max_frame
    assert Framer(max_frame).feed(wire) == [Frame(MSG, 1, payload)]
    # one byte more is too long
    with pytest.raises(FramingError):
        Framer(max_frame).feed(encode_frame(MSG, 1, payload + b"A"))


def test_buffered_reports_incomplete_frame():
    wire = encode_frame(MSG, 5, b"ICS1.LOGOFF")
    framer = Framer()
    assert framer.buffered == 0
    assert framer.feed(wire[:3]) == []  # not even a full length field
    assert framer.buffered == 3
    assert framer.feed(wire[3:12]) == []  # header complete, payload partial
    assert framer.buffered == 12
    assert framer.feed(wire[12:]) == [Frame(MSG, 5, b"ICS1.LOGOFF")]
    assert framer.buffered == 0
    # a complete frame followed by part of the next one
    assert framer.feed(wire + wire[:7]) == [Frame(MSG, 5, b"ICS1.LOGOFF")]
    assert framer.buffered == 7


def test_good_frames_before_bad_header_are_returned_then_next_feed_raises():
    good = [Frame(MSG, 1, b"ICS1.LOGOFF"), Frame(HEARTBEAT, 2, b"")]
    wire = b"".join(encode_frame(*f) for f in good) + raw_frame(5, ord("X"), 3)
    framer = Framer()
    assert framer.feed(wire) == good
    assert isinstance(framer.failed, FramingError)
    assert framer.failed.code == "E101"
    with pytest.raises(FramingError) as exc:
        framer.feed(encode_frame(MSG, 4, b"ICS1.LOGOFF"))  # even a good frame: the framer is spent
    assert exc.value.code == "E101"
    with pytest.raises(FramingError):
        framer.feed(b"")


def test_good_frame_before_oversized_length_is_returned_then_next_feed_raises():
    wire = encode_frame(ACK, 1) + raw_frame(101, MSG, 2)
    framer = Framer(100)
    assert framer.feed(wire) == [Frame(ACK, 1, b"")]
    assert framer.failed is not None and framer.failed.code == "E101"
    with pytest.raises(FramingError):
        framer.feed(b"")


@pytest.mark.parametrize("xid", [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, MAX_XID])
def test_xid_range_up_to_uint32_max(xid):
    wire = encode_frame(MSG, xid, b"P")
    assert wire[5:9] == xid.to_bytes(4, "big")
    assert Framer().feed(wire) == [Frame(MSG, xid, b"P")]


# --------------------------------------------------------------------------------------------
# 2. parse_input: every message shape (§2)
# --------------------------------------------------------------------------------------------

TXN_SHAPES = [
    # payload, header, oif, taf, mke, ori, fields
    (b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19700101",
     "ICS1A1", None, None, "QW", "CA0130000", (("NAM", "SMITH, JOHN"), ("DOB", "19700101"))),
    (b"ICS1.*TS0001.QV.CA0130000.LIC/ABC123",
     "ICS1", "TS0001", None, "QV", "CA0130000", (("LIC", "ABC123"),)),
    (b"ECC1.#C0A8010A.DQ.CA0130100.OLN/A1234567",
     "ECC1", None, "C0A8010A", "DQ", "CA0130100", (("OLN", "A1234567"),)),
    (b"ECC1R12345.*EC0001.#00-1B-63-84-45-E6.QH.CA0130100.NAM/DOE, JANE.PUR/C.ATN/DET SMITH",
     "ECC1R12345", "EC0001", "00-1B-63-84-45-E6", "QH", "CA0130100",
     (("NAM", "DOE, JANE"), ("PUR", "C"), ("ATN", "DET SMITH"))),
    (b"ICS1.QW.CA0130000", "ICS1", None, None, "QW", "CA0130000", ()),
    (b"ICS1.ABCDEF.CA0130000.XYZ/A/B=C*#", "ICS1", None, None, "ABCDEF", "CA0130000", (("XYZ", "A/B=C*#"),)),
]


@pytest.mark.parametrize(("payload", "header", "oif", "taf", "mke", "ori", "fields"), TXN_SHAPES)
def test_parse_transaction_shapes(payload, header, oif, taf, mke, ori, fields):
    inp = parse_input(payload)
    assert isinstance(inp, Input)
    assert (inp.header, inp.oif, inp.taf, inp.mke) == (header, oif, taf, mke)
    assert isinstance(inp.body, Transaction)
    assert inp.body.ori == ori
    assert inp.ori == ori
    assert inp.body.fields == fields
    # text is everything after the extended headers, exactly as received
    assert payload.decode().endswith("." + inp.text)
    assert inp.text.startswith(mke)


def test_header_mnemonic_and_ref():
    inp = parse_input(b"ICS1A1.QW.CA0130000.NAM/SMITH")
    assert (inp.mnemonic, inp.ref) == ("ICS1", "A1")
    inp = parse_input(b"ICS1.QW.CA0130000")
    assert (inp.mnemonic, inp.ref) == ("ICS1", "")
    inp = parse_input(b"ECC1ABCDEF.QW.CA0130000")  # 10 characters: mnemonic + 6-char ref
    assert (inp.mnemonic, inp.ref) == ("ECC1", "ABCDEF")


def test_transaction_get():
    inp = parse_input(b"ICS1.QH.CA0130000.NAM/DOE, JANE.PUR/C.REL/CA0130100.PUR/X")
    body = inp.body
    assert isinstance(body, Transaction)
    assert body.get("NAM") == "DOE, JANE"
    assert body.get("PUR") == "C"  # the first occurrence
    assert body.get("REL") == "CA0130100"
    assert body.get("ATN") is None
    assert Transaction(ori="CA0130000").get("NAM") is None


@pytest.mark.parametrize(
    ("payload", "user", "otp", "password"),
    [
        (b"ICS1.LOGON.TS0001.123456.secret", "TS0001", "123456", "secret"),
        (b"ICS1.LOGON.TS0001.-.secret", "TS0001", None, "secret"),
        (b"ICS1.LOGON.TS0001.-.correct horse battery", "TS0001", None, "correct horse battery"),
        (b"ECMDT.LOGON.EC0001.000000.a.b.c d.", "EC0001", "000000", "a.b.c d."),
        (b"ICS1.LOGON.TS0001.-. . ", "TS0001", None, " . "),
        (b"ICS1.LOGON.TS0001.-.!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "TS0001", None,
         "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    ],
)
def test_parse_logon(payload, user, otp, password):
    inp = parse_input(payload)
    assert inp.mke == "LOGON"
    assert inp.body == Logon(user=user, otp=otp, password=password)
    assert inp.ori is None


def test_parse_logon_with_extended_headers():
    inp = parse_input(b"ICS1.*TS0001.#C0A8010A.LOGON.TS0001.-.pw.x")
    assert (inp.oif, inp.taf) == ("TS0001", "C0A8010A")
    assert inp.body == Logon(user="TS0001", otp=None, password="pw.x")


def test_parse_logoff_and_bind():
    inp = parse_input(b"ICS1.LOGOFF")
    assert inp.mke == "LOGOFF" and inp.body == Logoff() and inp.text == "LOGOFF"
    inp = parse_input(b"ECP1.BIND")
    assert inp.mke == "BIND" and inp.body == Bind()
    inp = parse_input(b"ECC1.*EC0001.#C0A8010A.BIND")
    assert inp.body == Bind() and inp.oif == "EC0001"
    assert inp.ori is None


@pytest.mark.parametrize(
    ("payload", "candidates"),
    [
        (b"ICS1.PWD.old.new", [("old", "new")]),
        (b"ICS1.PWD.o.ld.n.ew", [("o", "ld.n.ew"), ("o.ld", "n.ew"), ("o.ld.n", "ew")]),
        (b"ICS1.PWD.old pass.new pass", [("old pass", "new pass")]),
        (b"ICS1.PWD.a..b", [("a", ".b"), ("a.", "b")]),
    ],
)
def test_parse_pwd_candidates(payload, candidates):
    inp = parse_input(payload)
    assert inp.mke == "PWD"
    assert isinstance(inp.body, PasswordChange)
    assert inp.body.candidates() == candidates


def test_password_change_candidates_direct():
    assert PasswordChange("old.new").candidates() == [("old", "new")]
    assert PasswordChange("o.ld.n.ew").candidates() == [("o", "ld.n.ew"), ("o.ld", "n.ew"), ("o.ld.n", "ew")]
    assert PasswordChange("nodot").candidates() == []
    assert PasswordChange(".x").candidates() == []


@pytest.mark.parametrize(
    ("payload", "ori", "dests", "text"),
    [
        (b"ICS1.AM.CA0130000.ICS2.TXT MEETING AT 0900", "CA0130000", ("ICS2",), "MEETING AT 0900"),
        (b"ICS1.AM.CA0130000.ICS2,ECP1,APB,CA0130100.TXT/ROAD CLOSED", "CA0130000",
         ("ICS2", "ECP1", "APB", "CA0130100"), "ROAD CLOSED"),
        (b"ICS1.AM.CA0130000.ICS2.TXT LINE 1\r\nLINE 2\r\n", "CA0130000", ("ICS2",), "LINE 1\r\nLINE 2\r\n"),
        (b"ICS1.AM.CA0130000.ICS2.TXT LF ONLY\nNEXT", "CA0130000", ("ICS2",), "LF ONLY\nNEXT"),
        (b"ICS1.AM.CA0130000.APB.TXT A.B.C", "CA0130000", ("APB",), "A.B.C"),
        (b"ICS1.*TS0001.#C0A8010A.AM.CA0130000.ICS2.TXT HI", "CA0130000", ("ICS2",), "HI"),
    ],
)
def test_parse_admin_message(payload, ori, dests, text):
    inp = parse_input(payload)
    assert inp.mke == "AM"
    assert inp.body == AdminText(ori=ori, destinations=dests, text=text)
    assert inp.ori == ori


# --------------------------------------------------------------------------------------------
# 3. Every rejection code the parser produces (§6), each with a concrete input
# --------------------------------------------------------------------------------------------

REJECTS = [
    # E102: characters outside 0x20-0x7E (CR/LF only inside AM free text)
    ("E102", b"ICS1.QW.CA0130000.NAM/M\xdcLLER", "non-ascii byte"),
    ("E102", b"ICS1.QW.CA0130000.NAM/SMITH\x00", "NUL"),
    # HT, CR, LF, FF and DEL in the text are allowed since issue 12 (tests/unit/test_grammar.py).
    ("E102", b"ICS1.QW.CA0130000.NAM/SMI\x08TH", "backspace"),
    ("E102", b"ICS1.QW.CA0130000.NAM/SMITH\x1b", "ESC"),
    ("E102", b"ICS1.QW.CA0130000.NAM/SMITH\x0bDOB/19700101", "VT in transaction"),
    ("E102", b"ICS1.QW.CA0130000\r\n.NAM/SMITH", "CR LF attached to the ORI"),
    ("E102", b"ICS1.LOGON.TS0001.-.pass\rword", "CR in LOGON"),
    ("E102", b"ICS1.AM.CA0130000.ICS2\r\n.TXT HI", "CR LF in AM destinations"),
    ("E102", b"ICS1.AM.CA0130000.ICS2.TXT HI\x07", "BEL in AM text"),
    ("E102", b"ICS1.AM.CA0130000.ICS2.TXT HI\xff", "non-ascii in AM text"),
    # E103: header
    ("E103", b"ICS.QW.CA0130000", "header too short"),
    ("E103", b"ICS1ABCDEFG.QW.CA0130000", "header too long"),
    ("E103", b"ics1.QW.CA0130000", "header lowercase"),
    ("E103", b"ICS-1.QW.CA0130000", "header punctuation"),
    ("E103", b".QW.CA0130000", "header empty"),
    ("E103", b"", "empty payload"),
    # E104: OIF
    ("E104", b"ICS1.*TS001.QW.CA0130000", "OIF 5 chars"),
    ("E104", b"ICS1.*TS00001.QW.CA0130000", "OIF 7 chars"),
    ("E104", b"ICS1.*ts0001.QW.CA0130000", "OIF lowercase"),
    ("E104", b"ICS1.*.QW.CA0130000", "OIF empty"),
    ("E104", b"ICS1.*TS0001X", "OIF last and too long"),
    # E105: TAF
    ("E105", b"ICS1.#C0A80.QW.CA0130000", "TAF too short"),
    ("E105", b"ICS1.#0123456789ABCDEF012.QW.CA0130000", "TAF too long"),
    ("E105", b"ICS1.#C0A8_10A.QW.CA0130000", "TAF bad char"),
    ("E105", b"ICS1.#c0a8010a.QW.CA0130000", "TAF lowercase"),
    ("E105", b"ICS1.*TS0001.#C0A8/10A.QW.CA0130000", "TAF bad char after OIF"),
    # E106: message key
    ("E106", b"ICS1", "no key"),
    ("E106", b"ICS1.", "empty key"),
    ("E106", b"ICS1.*TS0001", "OIF but no key"),
    ("E106", b"ICS1.*TS0001.#C0A8010A", "headers but no key"),
    ("E106", b"ICS1.*TS0001.#C0A8010A.", "headers then empty key"),
    ("E106", b"ICS1.Q.CA0130000", "key 1 char"),
    ("E106", b"ICS1.ABCDEFG.CA0130000", "key too long"),
    ("E106", b"ICS1.qw.CA0130000", "key lowercase"),
    ("E106", b"ICS1.logon.TS0001.-.pw", "LOGON lowercase"),
    ("E106", b"ICS1.#C0A8010A.*TS0001.QW.CA0130000", "OIF after TAF"),
    # E107: ORI
    ("E107", b"ICS1.QW", "ORI missing"),
    ("E107", b"ICS1.QW.", "ORI empty"),
    ("E107", b"ICS1.QW.CA013000", "ORI too short"),
    ("E107", b"ICS1.QW.CA01300000", "ORI too long"),
    ("E107", b"ICS1.QW.1A0130000", "ORI digit state"),
    ("E107", b"ICS1.QW.ca0130000", "ORI lowercase"),
    ("E107", b"ICS1.QW.NAM/SMITH", "field where ORI belongs"),
    ("E107", b"ICS1.AM", "AM without ORI"),
    ("E107", b"ICS1.AM.XX.ICS2.TXT HI", "AM bad ORI"),
    # E108: fields and special-key bodies
    ("E108", b"ICS1.QW.CA0130000.NAMSMITH", "field without slash"),
    ("E108", b"ICS1.QW.CA0130000.NA/SMITH", "2-letter tag"),
    ("E108", b"ICS1.QW.CA0130000.NAME/SMITH", "4-letter tag"),
    ("E108", b"ICS1.QW.CA0130000.NA1/SMITH", "tag with digit"),
    ("E108", b"ICS1.QW.CA0130000.nam/SMITH", "tag lowercase"),
    ("E108", b"ICS1.QW.CA0130000.NAM/", "empty value"),
    ("E108", b"ICS1.QW.CA0130000.NAM/SMITH.", "trailing dot"),
    ("E108", b"ICS1.QW.CA0130000.", "trailing dot after ORI"),
    ("E108", b"ICS1.QW.CA0130000..NAM/SMITH", "empty field"),
    ("E108", b"ICS1.LOGON", "LOGON no body"),
    ("E108", b"ICS1.LOGON.TS0001", "LOGON user only"),
    ("E108", b"ICS1.LOGON.TS0001.123456", "LOGON no password"),
    ("E108", b"ICS1.LOGON.TS0001.123456.", "LOGON empty password"),
    ("E108", b"ICS1.LOGON.TS001.123456.pw", "LOGON user id short"),
    ("E108", b"ICS1.LOGON.ts0001.123456.pw", "LOGON user id lowercase"),
    ("E108", b"ICS1.LOGON.TS0001.12345.pw", "OTP 5 digits"),
    ("E108", b"ICS1.LOGON.TS0001.1234567.pw", "OTP 7 digits"),
    ("E108", b"ICS1.LOGON.TS0001.12A456.pw", "OTP letter"),
    ("E108", b"ICS1.LOGON.TS0001.--.pw", "OTP double dash"),
    ("E108", b"ICS1.LOGON.TS0001..pw", "OTP empty"),
    ("E108", b"ICS1.LOGOFF.NOW", "LOGOFF with field"),
    ("E108", b"ICS1.LOGOFF.", "LOGOFF trailing dot"),
    ("E108", b"ECP1.BIND.X", "BIND with field"),
    ("E108", b"ICS1.PWD", "PWD no body"),
    ("E108", b"ICS1.PWD.onlyone", "PWD no dot"),
    ("E108", b"ICS1.PWD..new", "PWD empty old"),
    ("E108", b"ICS1.PWD.old.", "PWD empty new"),
    ("E108", b"ICS1.AM.CA0130000", "AM no destination"),
    ("E108", b"ICS1.AM.CA0130000.ICS2", "AM no text"),
    ("E108", b"ICS1.AM.CA0130000.ICS2.MEETING AT 0900", "AM without TXT"),
    ("E108", b"ICS1.AM.CA0130000.ICS2.TXT", "AM TXT without text"),
    ("E108", b"ICS1.AM.CA0130000.ICS2.TXT    ", "AM TXT blank text"),
    ("E108", b"ICS1.AM.CA0130000.ICS2,.TXT HI", "AM empty destination"),
    ("E108", b"ICS1.AM.CA0130000.I.TXT HI", "AM destination too short"),
    ("E108", b"ICS1.AM.CA0130000.ics2.TXT HI", "AM destination lowercase"),
]


@pytest.mark.parametrize(("code", "payload"), [pytest.param(c, p, id=f"{c}-{i}") for c, p, i in REJECTS])
def test_parse_input_rejects(code, payload):
    assert reject_code(payload) == code


def test_reject_codes_cover_every_parser_code():
    assert {c for c, _, _ in REJECTS} == {"E102", "E103", "E104", "E105", "E106", "E107", "E108"}


def test_protocol_error_carries_reject_and_detail():
    with pytest.raises(ProtocolError) as exc:
        parse_input(b"ICS1.QW")
    err = exc.value
    assert err.reject is Reject.E107
    assert err.code == "E107"
    assert str(err).startswith("E107 ")
    assert ProtocolError(Reject.E303).detail == "UPSTREAM TIMEOUT"
    assert str(ProtocolError(Reject.E303, "LATE")) == "E303 LATE"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"IC\rS1.QW.CA0130000", id="CR-in-header"),
        pytest.param(b"ICS1\n.QW.CA0130000", id="LF-ending-header"),
        pytest.param(b"ICS1.*TS\r0001.QW.CA0130000", id="CR-in-OIF"),
        pytest.param(b"ICS1.#C0A8\n010A.QW.CA0130000", id="LF-in-TAF"),
        pytest.param(b"ICS1.Q\nW.CA0130000", id="LF-in-key"),
        pytest.param(b"ICS1.LOG\r\nOFF", id="CRLF-inside-LOGOFF"),
        pytest.param(b"ICS1.LOGON.TS0001.-.pass\tword", id="HT-in-LOGON-password"),
        pytest.param(b"ICS1.AM\r\n.CA0130000.ICS2.TXT HI", id="CRLF-after-AM-key"),
        pytest.param(b"ICS1.AM.CA01\r30000.ICS2.TXT HI", id="CR-in-AM-ORI"),
    ],
)
def test_control_bytes_in_routing_fields_are_e102(payload):
    assert reject_code(payload) == "E102"


# --------------------------------------------------------------------------------------------
# 4. Secrets (§7)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("payload", "journal"),
    [
        (b"ICS1.LOGON.TS0001.123456.hunter2", "ICS1.LOGON.TS0001.*.*"),
        (b"ICS1.LOGON.TS0001.-.correct horse battery", "ICS1.LOGON.TS0001.*.*"),
        (b"ICS1.LOGON.TS0001.-.a.b.c", "ICS1.LOGON.TS0001.*.*"),
        (b"ICS1.*TS0001.#C0A8010A.LOGON.TS0001.654321.pw", "ICS1.*TS0001.#C0A8010A.LOGON.TS0001.*.*"),
        (b"ICS1.PWD.old.new", "ICS1.PWD.*.*"),
        (b"ICS1.PWD.o.ld.n.ew", "ICS1.PWD.*.*"),
        (b"ECC1.*EC0001.PWD.old pw.new pw", "ECC1.*EC0001.PWD.*.*"),
        (b"ICS1A1.QW.CA0130000.NAM/SMITH", "ICS1A1.QW.CA0130000.NAM/SMITH"),
        (b"ICS1.*TS0001.#C0A8010A.QW.CA0130000", "ICS1.*TS0001.#C0A8010A.QW.CA0130000"),
        (b"ICS1.LOGOFF", "ICS1.LOGOFF"),
        (b"ICS1.AM.CA0130000.ICS2.TXT PWD.LOGON.x", "ICS1.AM.CA0130000.ICS2.TXT PWD.LOGON.x"),
    ],
)
def test_journal_text(payload, journal):
    inp = parse_input(payload)
    assert inp.journal_text() == journal
    # redact() over the raw text agrees with journal_text() for well-formed input
    assert redact(payload.decode()) == journal


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("ICS1.LOGON.JD12.99.secret", "ICS1.LOGON.*.*"),
        ("ICS1.*JD1234.LOGON.JD12.99.secret", "ICS1.*JD1234.LOGON.*.*"),
        ("ICS1.*JD12.#BAD.LOGON.JD12.99.sec.ret", "ICS1.*JD12.#BAD.LOGON.*.*"),
        ("ICS1.LOGON.TS0001.123456", "ICS1.LOGON.*.*"),
        ("ICS1.LOGON.TS0001.123456.", "ICS1.LOGON.*.*"),
        ("ICS1.LOGON.TS0001.-.pass\\x0dword", "ICS1.LOGON.TS0001.*.*"),
        ("ics1.LOGON.TS0001.-.secret", "ics1.LOGON.TS0001.*.*"),
        ("ICS1.PWD.secret", "ICS1.PWD.*.*"),
        ("ICS1.PWD.old.new.", "ICS1.PWD.*.*"),
        ("ICS1.*TS0001.PWD.old.new", "ICS1.*TS0001.PWD.*.*"),
        ("ICS1.LOGON", "ICS1.LOGON"),
        ("ICS1.PWD", "ICS1.PWD"),
    ],
)
def test_redact_malformed_secret_texts(text, redacted):
    assert redact(text) == redacted
    assert redact(redacted) == redacted  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "ICS1A1.QW.CA0130000.NAM/SMITH, JOHN",
        "ICS1.AM.CA0130000.ICS2.TXT LOGON.TS0001.-.NOT A SECRET",
        "ICS1.QW.CA0130000.NAM/LOGON",
        "ICS1.LOGOFF",
        "ICS1",
        "",
        "garbage with no dots",
        "ICS1.*TS0001.#C0A8010A",
        "ICS1.QW.CA0130000.NAM/X.",
        "ICS1.\u00dcBER.x",
    ],
)
def test_redact_leaves_other_text_unchanged(text):
    assert redact(text) == text


def test_redact_logon_without_header():
    text = "LOGON.TS0001.123456.hunter2"
    with pytest.raises(ProtocolError):
        parse_input(text.encode())
    redacted = redact(text)
    assert "hunter2" not in redacted and "123456" not in redacted


def test_repr_never_contains_password_or_otp():
    pw, otp = "Sup3r.Secret pw", "482913"
    inp = parse_input(f"ICS1.LOGON.TS0001.{otp}.{pw}".encode())
    for obj in (inp, inp.body, Logon(user="TS0001", otp=otp, password=pw)):
        for text in (repr(obj), str(obj), f"{obj!r}"):
            assert pw not in text
            assert "Secret" not in text
            assert otp not in text
    assert "TS0001" in repr(inp.body)
    change = parse_input(b"ICS1.PWD.OldSecret.NewSecret")
    for obj in (change, change.body, PasswordChange("OldSecret.NewSecret")):
        assert "OldSecret" not in repr(obj)
        assert "NewSecret" not in repr(obj)
        assert "OldSecret" not in str(obj)


# --------------------------------------------------------------------------------------------
# 5. Outputs (§1, §3, §4)
# --------------------------------------------------------------------------------------------

def test_format_output():
    assert format_output("ICS1A1", "QW.CA0130000.NO RECORD") == b"ICS1A1.QW.CA0130000.NO RECORD"
    assert format_output("SYS", "X") == b"SYS.X"


def test_msc_notice():
    assert msc_notice("HDR", Reject.E303) == b"HDR.MSC.E303 UPSTREAM TIMEOUT"
    assert msc_notice("ICS1A1", Reject.E302) == b"ICS1A1.MSC.E302 UPSTREAM UNAVAILABLE"
    assert msc_notice("ICS1", Reject.E302, "LINK LOST") == b"ICS1.MSC.E302 LINK LOST"


def test_banner():
    assert banner("AUTHORIZED USE ONLY") == b"SYS.BANNER.AUTHORIZED USE ONLY"
    assert banner("A. B. C.").startswith(b"SYS.BANNER.")


@pytest.mark.parametrize(
    "pairs",
    [
        {"MNE": "ECM3"},
        {"MNE": "ECM3", "USR": "TS0001"},
        {"OSN": "12", "URL": "HTTP://X/Y"},
        {"K": ""},
    ],
)
def test_format_parse_pairs_round_trip(pairs):
    payload = format_pairs(**pairs)
    assert parse_pairs(payload) == pairs


def test_format_pairs_layout():
    assert format_pairs(MNE="ECM3", USR="TS0001") == b"MNE/ECM3.USR/TS0001"
    assert format_pairs() == b""
    assert parse_pairs(b"") == {}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"MNE", "E108"),
        (b"MNE/ECM3.USR", "E108"),
        (b"/ECM3", "E108"),
        (b"MNE/ECM3.", "E108"),
        (b".MNE/ECM3", "E108"),
        (b"MNE/\xff", "E102"),
    ],
)
def test_parse_pairs_malformed(payload, code):
    with pytest.raises(ProtocolError) as exc:
        parse_pairs(payload)
    assert exc.value.code == code


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"E204 MNEMONIC NOT AUTHORIZED FOR CORI", ("E204", "MNEMONIC NOT AUTHORIZED FOR CORI")),
        (b"E101 FRAME LENGTH 40000 OUTSIDE 5..32768", ("E101", "FRAME LENGTH 40000 OUTSIDE 5..32768")),
        (b"E303", ("E303", "UPSTREAM TIMEOUT")),
        (b"E999 SOMETHING ODD", ("E502", "E999 SOMETHING ODD")),
        (b"X", ("E502", "X")),
        (b"", ("E502", "INTERNAL ERROR")),
        (b"e204 lower", ("E502", "e204 lower")),
    ],
)
def test_parse_nak(payload, expected):
    assert parse_nak(payload) == expected


def test_parse_nak_of_framing_nak():
    code, reason = parse_nak(framing.nak(0, "E101", "FRAMING ERROR")[9:])
    assert (code, reason) == ("E101", "FRAMING ERROR")


@pytest.mark.parametrize(
    ("payload", "oif", "taf", "expected"),
    [
        (b"ICS1A1.QW.CA0130000.NAM/SMITH", "TS0001", "C0A8010A", "ICS1A1.*TS0001.#C0A8010A.QW.CA0130000.NAM/SMITH"),
        (b"ICS1.*TS0001.#C0A8010A.QW.CA0130000", "TS0001", "C0A8010A", "ICS1.*TS0001.#C0A8010A.QW.CA0130000"),
        (b"ICS1.#C0A8010A.QW.CA0130000", "TS0002", "C0A8010B", "ICS1.*TS0002.#C0A8010B.QW.CA0130000"),
        (b"ECC1.AM.CA0130100.APB.TXT A.B", "EC0001", "00000000C0A8010A", "ECC1.*EC0001.#00000000C0A8010A.AM.CA0130100.APB.TXT A.B"),
    ],
)
def test_normalized(payload, oif, taf, expected):
    inp = parse_input(payload)
    out = inp.normalized(oif, taf)
    assert out == expected
    again = parse_input(out.encode())
    assert (again.header, again.oif, again.taf, again.mke, again.body) == (inp.header, oif, taf, inp.mke, inp.body)


# --------------------------------------------------------------------------------------------
# 6. parse_upstream (§4)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("payload", "dest", "text", "mke", "ori"),
    [
        (b"ICS1A1.QW.CA0130000.NO RECORD", "ICS1A1", "QW.CA0130000.NO RECORD", "QW", "CA0130000"),
        (b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN\r\nDOB/19700101\r\nWANTED\r\n", "ICS1A1",
         "QW.CA0130000.NAM/SMITH, JOHN\r\nDOB/19700101\r\nWANTED\r\n", "QW", "CA0130000"),
        (b"ICS1.YQ.CA0130100.HIT CONFIRMATION REQUESTED", "ICS1", "YQ.CA0130100.HIT CONFIRMATION REQUESTED",
         "YQ", "CA0130100"),
        (b"APB.AM.CA0130100.APB.TXT ROAD CLOSED", "APB", "AM.CA0130100.APB.TXT ROAD CLOSED", "AM", "CA0130100"),
        (b"CA0130000.NOTICE", "CA0130000", "NOTICE", "NOTICE", None),
        (b"ICS1.free text, not ncic", "ICS1", "free text, not ncic", None, None),
        (b"ICS1.QW.NOTANORI.X", "ICS1", "QW.NOTANORI.X", "QW", None),
        (b"ICS1.\r\nLINE", "ICS1", "\r\nLINE", None, None),
    ],
)
def test_parse_upstream(payload, dest, text, mke, ori):
    msg = parse_upstream(payload)
    assert msg == UpstreamMessage(dest=dest, text=text, mke=mke, ori=ori)
    assert msg.mnemonic == dest[:4]


@pytest.mark.parametrize(
    ("payload", "kind", "ori"),
    [
        # NCIC unsolicited notifications: "$." + one character + "." instead of a message key.
        (b"ICS2.$.L.CA0130000.LOCATE WANTED PERSON NAM/DOE, JOHN.NIC/W123456789", "$.L.", "CA0130000"),
        (b"CA0130000.$.H.CA0130000\r\nHIT NOTIFICATION NIC/W1", "$.H.", "CA0130000"),
        (b"ICS1.$.H.TTP CA0130100 THREAT TO PROTECTEE", "$.H.", None),
        (b"ICS1.$.8.CA0130000 OUT-OF-STATE VEHICLE", "$.8.", "CA0130000"),
        (b"ICS1.$.K.CA0130000", "$.K.", "CA0130000"),
        (b"ICS1.$.P.PURGE NOTICE", "$.P.", None),
        # Ordinary keys keep their key as the kind; text that is neither has none.
        (b"ICS2.YQ.CA0130000.NAM/X", "YQ", "CA0130000"),
        (b"ICS2.LW.CA0130000.NIC/W1", "LW", "CA0130000"),
        (b"ICS2.$L.CA0130000", None, None),
        (b"ICS2.$.LL.CA0130000", None, None),
        (b"ICS2.$..CA0130000", None, None),
        (b"ICS2.$", None, None),
        (b"ICS2.free text", None, None),
    ],
)
def test_parse_upstream_kind(payload, kind, ori):
    msg = parse_upstream(payload)
    assert msg.kind == kind
    assert msg.ori == ori
    if kind is not None and kind.startswith("$."):
        assert msg.mke is None  # a notification has no message key


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"ics1.QW.CA0130000.NO RECORD", "E103"),
        (b"I.QW.CA0130000.NO RECORD", "E103"),
        (b"ICS1ABCDEFG.QW.CA0130000", "E103"),
        (b".QW.CA0130000", "E103"),
        (b"", "E103"),
        (b"IC S1.QW", "E103"),
        (b"ICS1A1", "E106"),
        (b"ICS1A1.", "E106"),
        # Bytes of the text never refuse an answer (issue 12; tests/unit/test_grammar.py); the
        # destination header stays strict.
        (b"IC\x00S1.QW.CA0130000.NO RECORD", "E103"),
        (b"ICS1\r\n.QW.CA0130000.NO RECORD", "E103"),
        (b"\xc9CS1.QW.CA0130000.NO RECORD", "E103"),
    ],
)
def test_parse_upstream_rejects(payload, code):
    with pytest.raises(ProtocolError) as exc:
        parse_upstream(payload)
    assert exc.value.code == code


# --------------------------------------------------------------------------------------------
# 7. The reject table (§6)
# --------------------------------------------------------------------------------------------

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def _spec_codes() -> dict[str, str]:
    text = PROTOCOL_MD.read_text()
    start = text.index("## 6.")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    rows = re.findall(r"^\|\s*(E\d{3})\s*\|\s*(.*?)\s*\|\s*$", section, re.MULTILINE)
    assert rows, "no reject table rows found in docs/PROTOCOL.md §6"
    codes = [c for c, _ in rows]
    assert len(codes) == len(set(codes)), "duplicate code in docs/PROTOCOL.md §6"
    return dict(rows)


def test_reject_members_are_well_formed_and_unique():
    codes = [r.code for r in Reject]
    assert all(re.fullmatch(r"E\d{3}", c) for c in codes)
    assert len(codes) == len(set(codes))
    assert all(r.reason and r.reason == r.reason.upper() for r in Reject)
    assert len({r.reason for r in Reject}) == len(codes)
    assert ALL_CODES == frozenset(codes)


def test_reject_lookup():
    assert Reject.lookup("E204") is Reject.E204
    assert Reject.lookup("E999") is None
    assert Reject.lookup("") is None
    assert Reject.E204.code == "E204"


def test_reject_table_matches_protocol_md():
    spec = _spec_codes()
    assert set(spec) == ALL_CODES
    assert set(spec) == {r.code for r in Reject}
