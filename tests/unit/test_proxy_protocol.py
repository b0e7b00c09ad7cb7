"""The PROXY protocol reader (msc.protocol.proxy): valid headers of both versions, and tables of
malformed ones — each refused with ProxyHeaderError, never another exception, never trusted."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc.protocol.proxy import (
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyReader,
    cn_sendable,
    crc32c,
    format_v1,
    format_v2,
)


def read(data: bytes, chunks: int = 1):
    r = ProxyReader()
    step = max(1, len(data) // chunks)
    out = None
    for i in range(0, len(data), step):
        out = r.feed(data[i:i + step])
        if out is not None:
            assert r.rest == data[out.length:i + step]  # what came after the header, exactly
            break
    return out, r


VALID_V1 = [
    (b"PROXY TCP4 192.168.1.10 10.0.0.1 56324 7400\r\n", ("192.168.1.10", 56324), ("10.0.0.1", 7400)),
    (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", ("0.0.0.0", 0), ("255.255.255.255", 65535)),
    (b"PROXY TCP6 ::1 ::1 1 2\r\n", ("::1", 1), ("::1", 2)),
    (b"PROXY TCP6 2001:db8::17 2001:db8::1 40000 443\r\n", ("2001:db8::17", 40000), ("2001:db8::1", 443)),
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:17 ::1 5 6\r\n", ("2001:db8::17", 5), ("::1", 6)),
    (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
     ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
]


@pytest.mark.parametrize("line,src,dst", VALID_V1)
@pytest.mark.parametrize("chunks", [1, 3, 1000])
def test_v1_valid(line, src, dst, chunks):
    h, r = read(line + b"\x00\x00\x00\x1aMxyz", chunks)
    assert h is not None and h.version == 1 and not h.local
    assert h.source == src and h.destination == dst
    # Everything after the CRLF is the client's, untouched (whatever chunk it came in).
    assert r.rest.endswith(b"Mxyz") or chunks > 1


def test_v1_rest_is_kept_exactly():
    r = ProxyReader()
    assert r.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nHELLO") is not None
    assert r.rest == b"HELLO"


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
                                  b"PROXY UNKNOWN ffff::1 ::1 9 9\r\n"])
def test_v1_unknown_is_local(line):
    h, _ = read(line)
    assert h.local and h.source is None


MALFORMED_V1 = [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",  # stray CR
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",  # double space
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",  # trailing space
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # missing port
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # extra field
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",  # unknown family
    b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",  # case
    b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",  # IPv6 under TCP4
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",  # IPv4 under TCP6
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",  # octet out of range
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",  # leading zero
    b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",  # short
    b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",  # a name
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",  # zone
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  # port out of range
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",  # sign
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 2\r\n",  # int() would take it
    b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",  # leading zero
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999999999999999999 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n",  # non-ASCII digits
    b"PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n",  # NUL
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\tx\r\n",
    b"PROXY\r\n",
    b"PROXY \r\n",
    b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 " + b"1" * 200 + b"\r\n",  # longer than 107 bytes
    b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",  # UNKNOWN too, at 107
    b"GET / HTTP/1.1\r\n\r\n",  # not a header at all
    b"\x00\x00\x00\x0dM\x00\x00\x00\x01LOGON",  # a msc frame with no header
    b"\x16\x03\x01\x02\x00\x01",  # a TLS ClientHello
    b"",
]


@pytest.mark.parametrize("data", MALFORMED_V1)
@pytest.mark.parametrize("chunks", [1, 7])
def test_v1_malformed_refused(data, chunks):
    if not data:
        assert ProxyReader().feed(b"") is None  # nothing yet: wait (the listener's timeout closes)
        return
    with pytest.raises(ProxyHeaderError):
        h, _ = read(data, chunks)
        if h is None:  # incomplete forever: the bytes so far must already be refused
            raise AssertionError(f"accepted as a start: {data!r}")


def test_wrong_first_byte_refused_at_once():
    for b in (b"G", b"\x00", b"\x16", b"p", b"Q"):
        with pytest.raises(ProxyHeaderError):
            ProxyReader().feed(b)


def test_v1_waits_up_to_107_bytes_only():
    r = ProxyReader()
    assert r.feed(b"PROXY TCP6 " + b"a" * 80) is None
    with pytest.raises(ProxyHeaderError):
        r.feed(b"a" * 30)


# -- version 2 ---------------------------------------------------------------------------------

VALID_V2 = [
    format_v2(("192.0.2.7", 40001), ("127.0.0.1", 7400)),
    format_v2(("2001:db8::7", 40001), ("2001:db8::1", 7400)),
    format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), crc=True),
    format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn="ICS1"),
    format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn="ICS1", crc=True),
    format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), tlvs=b"\x04\x00\x03abc\x04\x00\x00"),  # NOOPs
    format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), tlvs=b"\x05\x00\x04uuid\x02\x00\x04host"),
]


@pytest.mark.parametrize("data", VALID_V2)
@pytest.mark.parametrize("chunks", [1, 5, 1000])
def test_v2_valid(data, chunks):
    h, r = read(data + b"after", chunks)
    assert h is not None and h.version == 2 and not h.local
    assert h.source[0] in ("192.0.2.7", "2001:db8::7") and h.source[1] in (1, 40001)
    if chunks == 1:
        assert r.rest == b"after"


def test_v2_cn_reported_only_when_verified():
    assert read(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn="ICS1"))[0].ssl_cn == "ICS1"

    def ssl_tlv(client: int, verify: int, cn: bytes) -> bytes:
        sub = b"\x22" + struct.pack(">H", len(cn)) + cn
        value = bytes([client]) + struct.pack(">I", verify) + sub
        return b"\x20" + struct.pack(">H", len(value)) + value

    for client, verify in ((0x01, 0), (0x03, 1), (0x00, 0), (0x05, 0)):  # no cert on this conn / failed
        h, _ = read(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), tlvs=ssl_tlv(client, verify, b"ICS1")))
        assert h.ssl_cn is None, (client, verify)
    h, _ = read(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), tlvs=ssl_tlv(0x07, 0, b"ICS1")))
    assert h.ssl_cn == "ICS1"


def test_v2_local_and_unspec():
    assert read(format_v2(None, None))[0].local
    unspec = V2_SIGNATURE + bytes([0x21, 0x00]) + struct.pack(">H", 0)
    assert read(unspec)[0].local


def _v2(ver_cmd=0x21, fam=0x11, body=None, length=None):
    body = (bytes([192, 0, 2, 7, 127, 0, 0, 1]) + struct.pack(">HH", 1, 2)) if body is None else body
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack(">H", len(body) if length is None else length) + body


def _bad_crc():
    good = bytearray(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), crc=True))
    good[-1] ^= 0xFF
    return bytes(good)


MALFORMED_V2 = [
    ("version 1 in a v2 header", _v2(ver_cmd=0x11)),
    ("version 3", _v2(ver_cmd=0x31)),
    ("command 2", _v2(ver_cmd=0x22)),
    ("command 15", _v2(ver_cmd=0x2F)),
    ("family 4", _v2(fam=0x41)),
    ("protocol 3", _v2(fam=0x13)),
    ("UDP", _v2(fam=0x12)),
    ("UNIX stream", _v2(fam=0x31, body=b"\x00" * 216)),
    ("INET unspecified protocol", _v2(fam=0x10)),
    ("INET block short", _v2(body=b"\x00" * 11)),
    ("INET6 block short", _v2(fam=0x21, body=b"\x00" * 35)),
    ("TLV header truncated", _v2(body=b"\x00" * 12 + b"\x04\x00")),
    ("TLV longer than header", _v2(body=b"\x00" * 12 + b"\x04\x00\x09abc")),
    ("TLV given twice", _v2(body=b"\x00" * 12 + b"\x02\x00\x01a\x02\x00\x01b")),
    ("CRC TLV wrong size", _v2(body=b"\x00" * 12 + b"\x03\x00\x02ab")),
    ("CRC mismatch", _bad_crc()),
    ("SSL TLV truncated", _v2(body=b"\x00" * 12 + b"\x20\x00\x02\x07\x00")),
    ("SSL CN empty", _v2(body=b"\x00" * 12 + b"\x20\x00\x08\x07\x00\x00\x00\x00\x22\x00\x00")),
    ("SSL CN control byte", _v2(body=b"\x00" * 12 + b"\x20\x00\x0a\x07\x00\x00\x00\x00\x22\x00\x02A\n")),
    ("SSL CN non-ASCII", _v2(body=b"\x00" * 12 + b"\x20\x00\x0a\x07\x00\x00\x00\x00\x22\x00\x02A\xff")),
    ("SSL sub-TLV overruns", _v2(body=b"\x00" * 12 + b"\x20\x00\x0a\x07\x00\x00\x00\x00\x22\x00\x09AB")),
    ("longer than msc reads", _v2(body=b"\x00" * 12 + b"\x04" + struct.pack(">H", 5000) + b"x" * 5000)),
    ("signature off by one byte", b"\r\n\r\n\x00\r\nQUIT\r" + _v2()[12:]),
    ("signature truncated then other", b"\r\n\r\nX"),
]


@pytest.mark.parametrize("why,data", MALFORMED_V2, ids=[w for w, _ in MALFORMED_V2])
@pytest.mark.parametrize("chunks", [1, 4])
def test_v2_malformed_refused(why, data, chunks):
    with pytest.raises(ProxyHeaderError):
        h, _ = read(data, chunks)
        if h is None:
            raise AssertionError("waits for more bytes instead of refusing")


def test_v2_length_field_beyond_bound_refused_before_the_bytes_come():
    r = ProxyReader()
    with pytest.raises(ProxyHeaderError):
        r.feed(V2_SIGNATURE + b"\x21\x11\xff\xff")  # 65,535 announced: refused on the 16th byte


def test_crc32c_known_values():
    # RFC 3720 §B.4 test vectors.
    assert crc32c(b"\x00" * 32) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_format_v1_mapped_and_families():
    assert format_v1(("::ffff:192.0.2.7", 5), ("127.0.0.1", 6)) == b"PROXY TCP4 192.0.2.7 127.0.0.1 5 6\r\n"
    with pytest.raises(ValueError):
        format_v1(("2001:db8::1", 5), ("127.0.0.1", 6))


def test_feed_after_header_is_a_usage_error():
    r = ProxyReader()
    r.feed(b"PROXY UNKNOWN\r\n")
    with pytest.raises(RuntimeError):
        r.feed(b"x")


# -- the v2 builder (what ``msc web`` sends for a browser, with or without its certificate) ------

def test_v2_builder_exact_bytes_with_a_verified_cn():
    """§2.2 / §2.2.7 laid out by hand: the builder's bytes are exactly these."""
    cn = b"DESK7"
    sub = b"\x22" + struct.pack(">H", len(cn)) + cn
    ssl_value = b"\x03" + b"\x00\x00\x00\x00" + sub  # PP2_CLIENT_SSL|PP2_CLIENT_CERT_CONN, verify 0
    body = bytes([192, 0, 2, 44, 127, 0, 0, 1]) + struct.pack(">HH", 40000, 8443)
    body += b"\x20" + struct.pack(">H", len(ssl_value)) + ssl_value
    want = V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", len(body)) + body
    assert format_v2(("192.0.2.44", 40000), ("127.0.0.1", 8443), ssl_cn="DESK7") == want
    h, _ = read(want)
    assert (h.version, h.local, h.source, h.destination, h.ssl_cn) == (
        2, False, ("192.0.2.44", 40000), ("127.0.0.1", 8443), "DESK7")


def test_v2_builder_without_a_cn_sends_no_identity():
    data = format_v2(("192.0.2.44", 40000), ("127.0.0.1", 8443))
    assert b"\x20" not in data[28:]  # no TLV at all after the 12-byte address block
    assert len(data) == 16 + 12
    assert read(data)[0].ssl_cn is None


# Addresses as a browser's socket may report them: IPv4-mapped on a dual-stack socket (→ IPv4).
MAPPED = [
    (("::ffff:192.0.2.7", 5), ("127.0.0.1", 6), ("192.0.2.7", 5), ("127.0.0.1", 6)),
    (("192.0.2.7", 5), ("::ffff:127.0.0.1", 6), ("192.0.2.7", 5), ("127.0.0.1", 6)),
    # Both mapped: IPv6 on the wire (as the socket named them), read back in its IPv6 text form.
    (("::ffff:10.1.2.3", 65535), ("::ffff:10.0.0.1", 0), ("::ffff:a01:203", 65535), ("::ffff:a00:1", 0)),
    (("2001:db8::7", 1), ("::1", 2), ("2001:db8::7", 1), ("::1", 2)),
    # A link-local browser: the zone is the web server's own interface, meaningless at the switch.
    (("fe80::1%eth0", 5), ("fe80::2%eth0", 6), ("fe80::1", 5), ("fe80::2", 6)),
]


@pytest.mark.parametrize("src,dst,want_src,want_dst", MAPPED)
def test_v2_builder_addresses(src, dst, want_src, want_dst):
    h, _ = read(format_v2(src, dst, ssl_cn="ICS1"))
    assert (h.source, h.destination) == (want_src, want_dst)
    assert h.ssl_cn == "ICS1"


# What the builder refuses (ValueError) instead of sending bytes the switch would close on.
BUILDER_REFUSES = [
    ("mixed families", ("2001:db8::1", 5), ("127.0.0.1", 6), None),
    ("not an address", ("localhost", 5), ("127.0.0.1", 6), None),
    ("empty address", ("", 5), ("127.0.0.1", 6), None),
    ("port above 65535", ("192.0.2.7", 65536), ("127.0.0.1", 6), None),
    ("negative port", ("192.0.2.7", -1), ("127.0.0.1", 6), None),
    ("empty CN", ("192.0.2.7", 5), ("127.0.0.1", 6), ""),
    ("CN of 65 characters", ("192.0.2.7", 5), ("127.0.0.1", 6), "A" * 65),
    ("CN with a newline", ("192.0.2.7", 5), ("127.0.0.1", 6), "DESK\n7"),
    ("CN with NUL", ("192.0.2.7", 5), ("127.0.0.1", 6), "DESK\x007"),
    ("CN with DEL", ("192.0.2.7", 5), ("127.0.0.1", 6), "DESK\x7f"),
    ("CN non-ASCII", ("192.0.2.7", 5), ("127.0.0.1", 6), "BÜRO7"),
    ("CN with a tab", ("192.0.2.7", 5), ("127.0.0.1", 6), "DESK\t7"),
]


@pytest.mark.parametrize("why,src,dst,cn", BUILDER_REFUSES, ids=[w for w, *_ in BUILDER_REFUSES])
def test_v2_builder_refuses(why, src, dst, cn):
    with pytest.raises(ValueError):
        format_v2(src, dst, ssl_cn=cn)


# CNs as agencies write them: each at the edge of what travels, sent and read back unchanged.
EDGE_CNS = ["A", "A" * 64, " LEADING", "TRAILING ", "desk-7.ics.ca.gov", "O'BRIEN, PAT (DISPATCH)",
            "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", "12345"]


@pytest.mark.parametrize("cn", EDGE_CNS)
@pytest.mark.parametrize("crc", [False, True])
def test_v2_builder_edge_cns_round_trip(cn, crc):
    assert cn_sendable(cn)
    h, _ = read(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn=cn, crc=crc), chunks=3)
    assert h.ssl_cn == cn


def test_v2_builder_tampered_cn_is_refused_or_not_an_identity():
    """A flipped byte in a CRC-protected header is refused; the verified flag cleared (or verify
    set non-zero) leaves the CN unread — the switch never takes a CN the relay did not verify."""
    data = bytearray(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn="DESK7", crc=True))
    at = data.index(b"DESK7")
    data[at] ^= 0x01
    with pytest.raises(ProxyHeaderError):
        read(bytes(data))
    plain = format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn="DESK7")
    client_at = 28 + 3  # the SSL TLV follows the 12-byte INET block: type, length, then ``client``
    for client, verify in ((0x01, 0), (0x02, 0), (0x03, 1), (0x03, 0xFFFFFFFF)):
        bent = bytearray(plain)
        bent[client_at] = client
        bent[client_at + 1:client_at + 5] = struct.pack(">I", verify)
        assert read(bytes(bent))[0].ssl_cn is None, (client, verify)


# -- properties --------------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 65535)


@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), port, port, st.integers(1, 40),
       st.booleans(), st.binary(max_size=20))
@settings(max_examples=300, deadline=None)
def test_round_trip_any_split(addrs, sport, dport, step, v2, rest):
    data = (format_v2 if v2 else format_v1)((addrs[0], sport), (addrs[1], dport))
    r = ProxyReader()
    stream = data + rest
    h = None
    for i in range(0, len(stream), step):
        h = r.feed(stream[i:i + step])
        if h is not None:
            consumed = i + step
            break
    assert h is not None
    assert h.source == (str(__import__("ipaddress").ip_address(addrs[0])), sport)
    assert h.destination[1] == dport
    assert r.rest == stream[len(data):consumed]


printable_cn = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64)
any_cn = st.text(max_size=80)


@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6), st.tuples(ipv4, ipv4.map(lambda a: "::ffff:" + a))),
       port, port, st.one_of(st.none(), printable_cn), st.booleans(), st.integers(1, 40), st.binary(max_size=20))
@settings(max_examples=300, deadline=None)
def test_v2_builder_parser_round_trip_with_cn(addrs, sport, dport, cn, crc, step, rest):
    """Whatever address pair and printable CN a browser's connection has, the parser reads back
    exactly the address, the port and the CN — and nothing past the header."""
    import ipaddress

    data = format_v2((addrs[0], sport), (addrs[1], dport), ssl_cn=cn, crc=crc)
    stream = data + rest
    r = ProxyReader()
    h = None
    for i in range(0, len(stream), step):
        h = r.feed(stream[i:i + step])
        if h is not None:
            break
    assert h is not None and h.version == 2 and not h.local
    assert ipaddress.ip_address(h.source[0]) == ipaddress.ip_address(addrs[0])
    assert h.source[1] == sport and h.destination[1] == dport
    assert h.ssl_cn == cn
    assert h.length == len(data)


@given(any_cn)
@settings(max_examples=300, deadline=None)
def test_v2_builder_sends_a_cn_only_if_the_parser_accepts_it(cn):
    """The builder and the parser agree on every CN: sent and read back, or refused by both."""
    if cn_sendable(cn):
        assert read(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn=cn))[0].ssl_cn == cn
    else:
        with pytest.raises(ValueError):
            format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), ssl_cn=cn)
        raw = cn.encode("utf-8")[:200]
        sub = b"\x22" + struct.pack(">H", len(raw)) + raw
        value = b"\x03\x00\x00\x00\x00" + sub
        tlv = b"\x20" + struct.pack(">H", len(value)) + value
        with pytest.raises(ProxyHeaderError):
            read(format_v2(("192.0.2.7", 1), ("127.0.0.1", 2), tlvs=tlv))


@given(st.binary(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_arbitrary_bytes_never_crash(data):
    r = ProxyReader()
    try:
        r.feed(data)
    except ProxyHeaderError:
        pass


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_arbitrary_after_v2_signature_never_crash(data):
    r = ProxyReader()
    try:
        r.feed(V2_SIGNATURE + data)
    except ProxyHeaderError:
        pass
