"""Property tests of msc.protocol (PROTOCOL.md §1, §2, §4, §6, §7).

Round trips of frames and of grammar-generated messages, no-crash fuzzing (every failure is a
ProtocolError with a §6 code), and the Framer's memory bound. Derandomized and without an
example database, so every run checks the same examples and the file runs in a few seconds.
"""

from __future__ import annotations

import itertools
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msc.protocol import (
    ACK,
    ALL_CODES,
    DEFAULT_MAX_FRAME,
    HEARTBEAT,
    MSG,
    NAK,
    Frame,
    Framer,
    Logon,
    PasswordChange,
    ProtocolError,
    Transaction,
    encode_frame,
    parse_input,
    parse_nak,
    parse_pairs,
    parse_upstream,
    redact,
)
from msc.protocol.message import MAX_PWD_SPLITS, decode_lossy
from msc.protocol.redact import is_secret_word


def props(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


FRAME_TYPES = (MSG, ACK, NAK, HEARTBEAT)
UPPER = string.ascii_uppercase
ALNUM = string.ascii_uppercase + string.digits
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
PRINTABLE_NO_DOT = PRINTABLE.replace(".", "")
SPECIAL_KEYS = {"LOGON", "LOGOFF", "BIND", "PWD", "AM"}

# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

frames_st = st.builds(
    Frame,
    st.sampled_from(FRAME_TYPES),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=2000),
)


@st.composite
def chunked(draw, data: bytes) -> list[bytes]:
    """``data`` re-split at arbitrary boundaries (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


header_st = st.text(ALNUM, min_size=4, max_size=10)
oif_st = st.text(ALNUM, min_size=6, max_size=6)
taf_st = st.text(ALNUM + ":-", min_size=6, max_size=18)
mke_st = st.text(ALNUM, min_size=2, max_size=6).filter(lambda k: k not in SPECIAL_KEYS)
ori_st = st.builds(lambda a, b: a + b, st.text(UPPER, min_size=2, max_size=2), st.text(ALNUM, min_size=7, max_size=7))
# A value is not blank (PROTOCOL.md §2: an all-space value is E108 since issue 12).
field_st = st.tuples(st.text(UPPER, min_size=3, max_size=3),
                     st.text(PRINTABLE_NO_DOT, min_size=1, max_size=20).filter(lambda v: v.strip(" ")))
user_st = st.text(ALNUM, min_size=6, max_size=6)
otp_st = st.none() | st.text(string.digits, min_size=6, max_size=6)
password_st = st.text(PRINTABLE, min_size=1, max_size=40)


def ext_headers(oif: str | None, taf: str | None) -> str:
    return (f".*{oif}" if oif is not None else "") + (f".#{taf}" if taf is not None else "")


def assert_protocol_failure(exc: BaseException) -> None:
    assert isinstance(exc, ProtocolError), f"{type(exc).__name__} is not a ProtocolError: {exc!r}"
    assert exc.code in ALL_CODES


def feed_all(framer: Framer, chunks: list[bytes]) -> list[Frame]:
    """Feed every chunk; return the frames, stopping at the first (E101) error."""
    out: list[Frame] = []
    for chunk in chunks:
        try:
            out += framer.feed(chunk)
        except ProtocolError as exc:
            assert exc.code == "E101"
            break
        assert framer.failed is not None or framer.buffered <= framer.max_frame + 9
    return out


# --------------------------------------------------------------------------------------------
# a. frame round trip
# --------------------------------------------------------------------------------------------

def _assert_redacted(cut: str, expected: str, payload: str, header: str) -> None:
    """redact() of a well-formed logon/password change gives what parse_input journals, except
    after a header spelled like a password key (PASS, PWD0…): redact(), which cannot know it is a
    header, may keep nothing after the key — the safe side (a field there may be an old
    password); parse_input, which knows, keeps the rest."""
    if is_secret_word(header) and cut != expected:
        assert cut.endswith(".*.*") and payload.startswith(cut[:-4]) and len(cut) - 4 <= len(header)
    else:
        assert cut == expected


@props(600)
@given(frames=st.lists(frames_st, max_size=12), data=st.data())
def test_frames_round_trip_any_chunking(frames, data):
    wire = b"".join(encode_frame(*f) for f in frames)
    chunks = data.draw(chunked(wire))
    framer = Framer()
    got: list[Frame] = []
    for chunk in chunks:
        got += framer.feed(chunk)
    assert got == frames
    assert framer.buffered == 0
    assert framer.failed is None


@props(100)
@given(frames=st.lists(frames_st, min_size=1, max_size=5))
def test_frames_round_trip_byte_by_byte(frames):
    wire = b"".join(encode_frame(*f) for f in frames)
    framer = Framer()
    got: list[Frame] = []
    for i in range(len(wire)):
        got += framer.feed(wire[i : i + 1])
    assert got == frames


# --------------------------------------------------------------------------------------------
# b. message round trip
# --------------------------------------------------------------------------------------------

@props(1000)
@given(
    header=header_st,
    oif=st.none() | oif_st,
    taf=st.none() | taf_st,
    mke=mke_st,
    ori=ori_st,
    fields=st.lists(field_st, max_size=5),
    norm_oif=oif_st,
    norm_taf=taf_st,
)
def test_transaction_round_trip(header, oif, taf, mke, ori, fields, norm_oif, norm_taf):
    text = ".".join([mke, ori, *(f"{t}/{v}" for t, v in fields)])
    payload = f"{header}{ext_headers(oif, taf)}.{text}".encode("ascii")
    inp = parse_input(payload)
    assert (inp.header, inp.oif, inp.taf, inp.mke) == (header, oif, taf, mke)
    assert inp.text == text
    assert inp.body == Transaction(ori=ori, fields=tuple(fields))
    assert inp.ori == ori
    assert (inp.mnemonic, inp.ref) == (header[:4], header[4:])
    # no LOGON/PWD: nothing is altered for the journal (§7)
    assert inp.journal_text() == payload.decode()
    if not any(is_secret_word(w) for w in (header, mke, ori)):  # redact() takes these for a mangled LOGON/PWD
        assert redact(payload.decode()) == payload.decode()

    upstream = inp.normalized(norm_oif, norm_taf)
    assert upstream == f"{header}.*{norm_oif}.#{norm_taf}.{text}"
    again = parse_input(upstream.encode("ascii"))
    assert (again.header, again.oif, again.taf) == (header, norm_oif, norm_taf)
    assert (again.mke, again.body, again.text) == (inp.mke, inp.body, inp.text)


@props(600)
@given(
    header=header_st,
    oif=st.none() | oif_st,
    taf=st.none() | taf_st,
    user=user_st,
    otp=otp_st,
    password=password_st,
)
def test_logon_round_trip(header, oif, taf, user, otp, password):
    payload = f"{header}{ext_headers(oif, taf)}.LOGON.{user}.{otp or '-'}.{password}"
    inp = parse_input(payload.encode("ascii"))
    assert (inp.header, inp.oif, inp.taf, inp.mke) == (header, oif, taf, "LOGON")
    assert inp.body == Logon(user=user, otp=otp, password=password)
    expected = f"{header}{ext_headers(oif, taf)}.LOGON.{user}.*.*"
    assert inp.journal_text() == expected
    _assert_redacted(redact(payload), expected, payload, header)
    # repr() does not depend on the secrets at all
    assert repr(inp.body) == repr(Logon(user=user, otp=otp and "000000", password="x"))
    assert repr(inp) == repr(parse_input(f"{header}{ext_headers(oif, taf)}.LOGON.{user}.-.x".encode()))


@props(200)
@given(
    header=header_st,
    oif=st.none() | oif_st,
    old=password_st,
    new=password_st,
)
def test_pwd_round_trip(header, oif, old, new):
    payload = f"{header}{ext_headers(oif, None)}.PWD.{old}.{new}"
    inp = parse_input(payload.encode("ascii"))
    assert inp.mke == "PWD"
    assert inp.body == PasswordChange(f"{old}.{new}")
    if old.count(".") < MAX_PWD_SPLITS:
        assert (old, new) in inp.body.candidates()
    expected = f"{header}{ext_headers(oif, None)}.PWD.*.*"
    assert inp.journal_text() == expected
    _assert_redacted(redact(payload), expected, payload, header)


@props(200)
@given(
    header=header_st,
    ori=ori_st,
    dests=st.lists(st.text(ALNUM, min_size=2, max_size=10), min_size=1, max_size=4),
    sep=st.sampled_from([" ", "/"]),
    free=st.text(PRINTABLE + "\r\n", min_size=1, max_size=60).filter(lambda t: t.strip() and t[0] not in " /"),
)
def test_admin_round_trip(header, ori, dests, sep, free):
    payload = f"{header}.AM.{ori}.{','.join(dests)}.TXT{sep}{free}"
    inp = parse_input(payload.encode("ascii"))
    assert inp.mke == "AM"
    assert (inp.body.ori, inp.body.destinations, inp.body.text) == (ori, tuple(dests), free)
    assert inp.journal_text() == payload


# --------------------------------------------------------------------------------------------
# c. no-crash fuzzing
# --------------------------------------------------------------------------------------------

def check_parsers(payload: bytes) -> None:
    for parse in (parse_input, parse_upstream, parse_pairs):
        try:
            parse(payload)
        except Exception as exc:  # noqa: BLE001 - the property: only ProtocolError
            assert_protocol_failure(exc)
    code, _reason = parse_nak(payload)
    assert code in ALL_CODES
    redact(decode_lossy(payload))  # the journal path of a rejected message must not raise


@props(1000)
@given(payload=st.binary(max_size=4096))
def test_parsers_never_crash_on_arbitrary_bytes(payload):
    check_parsers(payload)


@props(600)
@given(payload=st.text(PRINTABLE + "\r\n", max_size=200).map(lambda s: s.encode("ascii")))
def test_parsers_never_crash_on_printable_text(payload):
    check_parsers(payload)


@props(600)
@given(
    data=st.binary(max_size=4096),
    max_frame=st.sampled_from([5, 9, 64, 4096, DEFAULT_MAX_FRAME]),
    draw=st.data(),
)
def test_framer_never_crashes_on_arbitrary_bytes(data, max_frame, draw):
    chunks = draw.draw(chunked(data))
    framer = Framer(max_frame)
    try:
        for chunk in chunks:
            for f in framer.feed(chunk):
                assert f.type in FRAME_TYPES
                assert 0 <= f.xid <= 0xFFFFFFFF
                assert len(f.payload) <= max_frame - 5
    except Exception as exc:  # noqa: BLE001
        assert_protocol_failure(exc)
        assert exc.code == "E101"


VALID_MESSAGES = [
    b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19700101",
    b"ICS1.*TS0001.#C0A8010A.QH.CA0130000.NAM/DOE, JANE.PUR/C.ATN/DET SMITH",
    b"ICS1.LOGON.TS0001.123456.correct horse battery",
    b"ECMDT.LOGON.EC0001.-.a.b.c",
    b"ICS1.PWD.old.pw.new.pw",
    b"ICS1.AM.CA0130000.ICS2,APB.TXT LINE 1\r\nLINE 2",
    b"ICS1.LOGOFF",
    b"ECP1.BIND",
    b"ICS1A1.QW.CA0130000.NO RECORD",
]


@st.composite
def mutated(draw, original: bytes) -> bytes:
    buf = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert" or not buf:
            buf.insert(draw(st.integers(0, len(buf))), draw(st.integers(0, 255)))
        elif op == "flip":
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= draw(st.integers(1, 255))
        else:
            del buf[draw(st.integers(0, len(buf) - 1))]
    return bytes(buf)


@props(1000)
@given(data=st.data(), original=st.sampled_from(VALID_MESSAGES))
def test_parsers_never_crash_on_mutated_messages(data, original):
    check_parsers(data.draw(mutated(original)))


@props(600)
@given(
    data=st.data(),
    xid=st.integers(0, 2**32 - 1),
    ftype=st.sampled_from(FRAME_TYPES),
    original=st.sampled_from(VALID_MESSAGES),
)
def test_framer_and_parsers_never_crash_on_mutated_frames(data, xid, ftype, original):
    good = encode_frame(MSG, 1, VALID_MESSAGES[0])
    wire = data.draw(mutated(encode_frame(ftype, xid, original))) + good
    framer = Framer(1024)
    try:
        for chunk in data.draw(chunked(wire)):
            for f in framer.feed(chunk):
                assert f.type in FRAME_TYPES
                check_parsers(f.payload)
    except Exception as exc:  # noqa: BLE001
        assert_protocol_failure(exc)
        assert exc.code == "E101"


# --------------------------------------------------------------------------------------------
# d. bounded memory
# --------------------------------------------------------------------------------------------

@props(600)
@given(
    max_frame=st.integers(5, 5000),
    data=st.data(),
    ftype=st.sampled_from(FRAME_TYPES),
    xid=st.integers(0, 2**32 - 1),
    prefix=st.lists(frames_st.filter(lambda f: len(f.payload) <= 200), max_size=3),
)
def test_framer_buffer_bounded_for_incomplete_frame(max_frame, data, ftype, xid, prefix):
    length = data.draw(st.integers(5, max_frame), label="length")
    partial = data.draw(st.binary(max_size=length - 5), label="payload")
    head = length.to_bytes(4, "big") + bytes([ftype]) + xid.to_bytes(4, "big")
    incomplete = (head + partial)[: 4 + length - 1]  # always at least one byte short
    prefix = [f for f in prefix if len(f.payload) <= max_frame - 5]
    wire = b"".join(encode_frame(*f) for f in prefix) + incomplete
    framer = Framer(max_frame)
    got: list[Frame] = []
    for chunk in data.draw(chunked(wire), label="chunks"):
        got += framer.feed(chunk)
        assert framer.buffered <= max_frame + 9
    assert got == prefix
    assert framer.failed is None
    assert framer.buffered == len(incomplete)
    assert framer.buffered <= max_frame + 9


@props(600)
@given(data=st.binary(max_size=4096), max_frame=st.integers(5, 2000), draw=st.data())
def test_framer_buffer_bounded_on_arbitrary_stream(data, max_frame, draw):
    framer = Framer(max_frame)
    for chunk in draw.draw(chunked(data)):
        try:
            framer.feed(chunk)
        except ProtocolError as exc:
            assert exc.code == "E101"
            return
        if framer.failed is None:
            assert framer.buffered <= max_frame + 9


# -- outputs in parts (PROTOCOL.md §5) -------------------------------------------------------

from msc.protocol.parts import join_parts, split_output  # noqa: E402

_TEXT_BYTES = st.binary(max_size=3000).map(lambda b: bytes(c if c >= 9 else 46 for c in b))


@props(300)
@given(header=st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=10),
       text=_TEXT_BYTES | st.lists(st.sampled_from([b"\r\n", b".", b"A", b"NAM/DOE", b" "]), max_size=800).map(b"".join),
       limit=st.integers(min_value=40, max_value=5000))
def test_split_output_parts_fit_rejoin_and_keep_crlf(header, text, limit):
    payload = header.encode() + b"." + text
    parts = split_output(payload, limit)
    assert all(len(p) <= limit for p in parts)
    assert join_parts(parts) == payload
    if len(parts) > 1:
        n = len(parts)
        assert all(p.startswith(header.encode() + b".MSC.PART %d/%d." % (i, n)) for i, p in enumerate(parts, 1))
        chunks = [p.split(b".MSC.PART ", 1)[1].split(b".", 1)[1] for p in parts]
        assert all(c for c in chunks)
        for a, b in itertools.pairwise(chunks):
            assert not (a.endswith(b"\r") and b.startswith(b"\n"))
