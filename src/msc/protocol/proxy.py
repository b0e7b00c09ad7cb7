"""The PROXY protocol, versions 1 and 2: who is really on the other side of a relay (sans-IO).

A relay in front of msc (the web console, ``msc web``; or HAProxy, stunnel …) opens a TCP
connection per client and sends, as its very first bytes, a header naming the client's address
(and, in version 2, optionally the CN of the client certificate the relay verified). msc takes
that address as the peer of the session — for the TAF (PPP §1.6.8) and for binding stations and
pools by address or certificate — **only** on a listener with ``proxy_protocol = true`` and only
from an address in its ``trusted_proxies`` (CONFIG.md "Listeners"; the caller checks that; this
module only reads bytes).

Source: HAProxy Technologies, *The PROXY protocol, Versions 1 & 2* (proxy-protocol.txt, rev.
2020/03/05), cited by section below. The parser is strict where the specification allows a
choice, because a header that is not exactly right comes from something that is not the relay
we trust:

* v1 (§2.1): ``"PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF`` or
  ``"PROXY UNKNOWN" … CRLF``; at most 107 bytes with the CRLF; single spaces; addresses in
  their canonical text form (IPv4 dotted quad without leading zeros, IPv6 as ``ipaddress``
  reads it, no zone); ports ``0``–``65535`` without sign or leading zero.
* v2 (§2.2): the 12-byte signature, version 2, command LOCAL or PROXY, family
  UNSPEC/INET/INET6 over STREAM (UNIX and DGRAM are refused: no TAF can be made of them), the
  length, the address block, then TLVs (§2.2.6–§2.2.7) that must tile the rest exactly. A
  ``PP2_TYPE_CRC32C`` TLV is verified (§2.2.8). ``PP2_TYPE_SSL``'s ``PP2_SUBTYPE_SSL_CN`` is
  reported only when the relay says the client presented a certificate on this connection and
  it verified (``PP2_CLIENT_SSL`` and ``PP2_CLIENT_CERT_CONN`` set, ``verify`` = 0).
* LOCAL (v2) and UNKNOWN (v1) mean "the relay's own connection" (health checks): §2.1/§2.2 say
  the receiver must then use the connection's real addresses (:attr:`ProxyHeader.local`).

:class:`ProxyReader` is fed whatever the socket produced; it returns the header once complete
(with any bytes after it in :attr:`ProxyReader.rest`) and raises :class:`ProxyHeaderError` as
soon as the bytes cannot be the start of a valid header — a wrong first byte is refused at
once, not after 107 of them.
"""

from __future__ import annotations

import ipaddress
import re
import struct

import msgspec

from msc.protocol.codes import MscError

V1_PREFIX = b"PROXY "
V1_MAX = 107  # §2.1: "a receiver … must not read more than 107 bytes"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # §2.2: \x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A
V2_HEAD = 16
#: The longest v2 header msc reads (§2.2 allows 65,535 bytes of addresses and TLVs; a relay
#: that names a client needs a few hundred, certificates' CNs included).
V2_MAX = 4096

CMD_LOCAL, CMD_PROXY = 0x0, 0x1
AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = 0x0, 0x1, 0x2, 0x3
PROTO_UNSPEC, PROTO_STREAM, PROTO_DGRAM = 0x0, 0x1, 0x2
_ADDR_LEN = {AF_INET: 12, AF_INET6: 36, AF_UNIX: 216}

# §2.2.7 TLV types (the ones msc reads or checks).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_TYPE_NETNS = 0x30
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

_PORT = re.compile(rb"(?:0|[1-9][0-9]{0,4})\Z")
_V1_ADDR = re.compile(rb"[0-9A-Fa-f:.]{2,45}\Z")
_CN_MAX = 64  # X.520 ub-common-name


class ProxyHeaderError(MscError):
    """The bytes are not a valid PROXY header: the connection is to be closed."""


class ProxyHeader(msgspec.Struct, frozen=True, kw_only=True):
    """A decoded header. ``local``: use the connection's own addresses (LOCAL / UNKNOWN / an
    UNSPEC family); otherwise ``source`` and ``destination`` are (address text, port).
    ``ssl_cn``: the verified client certificate's CN the relay passed on (v2 only)."""

    version: int
    local: bool
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    ssl_cn: str | None = None
    length: int = 0  # bytes the header took on the wire


class ProxyReader:
    """Sans-IO reader of the one PROXY header at the start of a connection.

    ``feed(data)`` returns None while the header is incomplete, the :class:`ProxyHeader` once it
    is complete (then :attr:`rest` holds the bytes that followed it), and raises
    :class:`ProxyHeaderError` for anything invalid. Feeding after the header is a usage error.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.header: ProxyHeader | None = None
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        if self.header is not None:
            raise RuntimeError("the PROXY header is already complete")
        self._buf += data
        buf = self._buf
        n = len(buf)
        # Which version: decided by the bytes seen so far (a wrong first byte fails at once).
        if buf[:1] == b"P":
            if bytes(buf[:6]) != V1_PREFIX[:min(n, 6)]:
                raise ProxyHeaderError("not a PROXY header")
            end = buf.find(b"\r\n")
            if end < 0:
                if n >= V1_MAX or b"\n" in buf or b"\r" in buf[:-1]:
                    raise ProxyHeaderError("PROXY v1 line longer than 107 bytes or without CRLF")
                return None
            if end + 2 > V1_MAX:
                raise ProxyHeaderError("PROXY v1 line longer than 107 bytes")
            header = parse_v1(bytes(buf[: end + 2]))
            return self._done(header, end + 2)
        if bytes(buf[: min(n, 12)]) != V2_SIGNATURE[: min(n, 12)]:
            raise ProxyHeaderError("not a PROXY header")
        if n < V2_HEAD:
            return None
        length = struct.unpack_from(">H", buf, 14)[0]
        if V2_HEAD + length > V2_MAX:
            raise ProxyHeaderError(f"PROXY v2 header of {V2_HEAD + length} bytes, at most {V2_MAX}")
        if n < V2_HEAD + length:
            return None
        header = parse_v2(bytes(buf[: V2_HEAD + length]))
        return self._done(header, V2_HEAD + length)

    def _done(self, header: ProxyHeader, used: int) -> ProxyHeader:
        self.rest = bytes(self._buf[used:])
        self._buf = bytearray()
        self.header = header
        return header


# -- version 1 ---------------------------------------------------------------------------------

def _v1_address(raw: bytes, family: bytes) -> str:
    if _V1_ADDR.match(raw) is None:
        raise ProxyHeaderError("PROXY v1 address malformed")
    text = raw.decode("ascii")
    try:
        ip = ipaddress.IPv4Address(text) if family == b"TCP4" else ipaddress.IPv6Address(text)
    except ValueError:
        raise ProxyHeaderError("PROXY v1 address malformed") from None
    if family == b"TCP4" and str(ip) != text:
        raise ProxyHeaderError("PROXY v1 address not in canonical form")
    return str(ip)


def _v1_port(raw: bytes) -> int:
    if _PORT.match(raw) is None or int(raw) > 65535:
        raise ProxyHeaderError("PROXY v1 port malformed")
    return int(raw)


def parse_v1(line: bytes) -> ProxyHeader:
    """One complete v1 line, CRLF included (§2.1)."""
    if not line.startswith(V1_PREFIX) or not line.endswith(b"\r\n") or len(line) > V1_MAX:
        raise ProxyHeaderError("not a PROXY v1 line")
    body = line[len(V1_PREFIX):-2]
    if b"\r" in body or b"\n" in body or b"\x00" in body:
        raise ProxyHeaderError("PROXY v1 line with a control byte")
    if body == b"UNKNOWN" or body.startswith(b"UNKNOWN "):
        # §2.1: "the receiver must ignore anything presented before the CRLF"
        return ProxyHeader(version=1, local=True, length=len(line))
    parts = body.split(b" ")
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 line malformed")
    family = parts[0]
    src, dst = _v1_address(parts[1], family), _v1_address(parts[2], family)
    return ProxyHeader(version=1, local=False, source=(src, _v1_port(parts[3])),
                       destination=(dst, _v1_port(parts[4])), length=len(line))


def format_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The v1 line naming a TCP client ``source`` that connected to ``destination`` (§2.1)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:  # a mapped IPv4 peer on an IPv6 socket, or the reverse
        src = getattr(src, "ipv4_mapped", None) or src
        dst = getattr(dst, "ipv4_mapped", None) or dst
    if src.version != dst.version:
        raise ValueError("source and destination are of different address families")
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {int(source[1])} {int(destination[1])}\r\n".encode("ascii")


# -- version 2 ---------------------------------------------------------------------------------

def parse_v2(data: bytes) -> ProxyHeader:
    """One complete v2 header: signature, version/command, family/protocol, length, the rest (§2.2)."""
    if len(data) < V2_HEAD or data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("not a PROXY v2 header")
    ver_cmd, fam, length = data[12], data[13], struct.unpack_from(">H", data, 14)[0]
    if len(data) != V2_HEAD + length:
        raise ProxyHeaderError("PROXY v2 length does not match")
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 version {ver_cmd >> 4}")
    cmd = ver_cmd & 0xF
    if cmd not in (CMD_LOCAL, CMD_PROXY):
        raise ProxyHeaderError(f"PROXY v2 command {cmd}")
    family, proto = fam >> 4, fam & 0xF
    if family > AF_UNIX or proto > PROTO_DGRAM:
        raise ProxyHeaderError("PROXY v2 address family or protocol unknown")
    addr_len = _ADDR_LEN.get(family, 0)
    if length < addr_len:
        raise ProxyHeaderError("PROXY v2 address block truncated")
    tlvs = _tlvs(data, V2_HEAD + addr_len)
    if PP2_TYPE_CRC32C in tlvs:
        _check_crc(data, tlvs[PP2_TYPE_CRC32C])
    if cmd == CMD_LOCAL or family == AF_UNSPEC:
        # §2.2: LOCAL — "the receiver must accept this connection as valid and must use the real
        # connection endpoints and discard the protocol block including the family".
        return ProxyHeader(version=2, local=True, length=len(data))
    if family == AF_UNIX or proto != PROTO_STREAM:
        raise ProxyHeaderError("PROXY v2: only TCP over IPv4/IPv6 names a client msc can serve")
    block = data[V2_HEAD:V2_HEAD + addr_len]
    if family == AF_INET:
        src = str(ipaddress.IPv4Address(block[0:4]))
        dst = str(ipaddress.IPv4Address(block[4:8]))
        sport, dport = struct.unpack_from(">HH", block, 8)
    else:
        src = str(ipaddress.IPv6Address(block[0:16]))
        dst = str(ipaddress.IPv6Address(block[16:32]))
        sport, dport = struct.unpack_from(">HH", block, 32)
    return ProxyHeader(version=2, local=False, source=(src, sport), destination=(dst, dport),
                       ssl_cn=_ssl_cn(tlvs.get(PP2_TYPE_SSL)), length=len(data))


def _tlvs(data: bytes, pos: int) -> dict[int, tuple[int, bytes]]:
    """The TLVs from ``pos`` to the end: type → (offset of its value, value). They must tile the
    rest exactly; a type given twice is refused (which one would count?)."""
    out: dict[int, tuple[int, bytes]] = {}
    while pos < len(data):
        if pos + 3 > len(data):
            raise ProxyHeaderError("PROXY v2 TLV truncated")
        typ, ln = data[pos], struct.unpack_from(">H", data, pos + 1)[0]
        start = pos + 3
        if start + ln > len(data):
            raise ProxyHeaderError("PROXY v2 TLV longer than the header")
        if typ in out and typ != PP2_TYPE_NOOP:
            raise ProxyHeaderError(f"PROXY v2 TLV 0x{typ:02X} twice")
        out[typ] = (start, data[start:start + ln])
        pos = start + ln
    return out


def _ssl_cn(tlv: tuple[int, bytes] | None) -> str | None:
    """§2.2.7 ``pp2_tlv_ssl``: client (1 byte), verify (4 bytes), then sub-TLVs."""
    if tlv is None:
        return None
    _off, value = tlv
    if len(value) < 5:
        raise ProxyHeaderError("PROXY v2 SSL TLV truncated")
    client, verify = value[0], struct.unpack_from(">I", value, 1)[0]
    subs = _tlvs(value, 5)
    cn = subs.get(PP2_SUBTYPE_SSL_CN)
    if cn is None:
        return None
    raw = cn[1]
    if not raw or len(raw) > _CN_MAX or any(b < 0x20 or b > 0x7E for b in raw):
        raise ProxyHeaderError("PROXY v2 SSL CN malformed")
    if not (client & PP2_CLIENT_SSL and client & PP2_CLIENT_CERT_CONN) or verify != 0:
        return None  # not a certificate verified on this connection: not an identity
    return raw.decode("ascii")


def _check_crc(data: bytes, tlv: tuple[int, bytes]) -> None:
    off, value = tlv
    if len(value) != 4:
        raise ProxyHeaderError("PROXY v2 CRC32C TLV is not 4 bytes")
    zeroed = data[:off] + b"\x00\x00\x00\x00" + data[off + 4:]
    if crc32c(zeroed) != struct.unpack(">I", value)[0]:
        raise ProxyHeaderError("PROXY v2 CRC32C does not match")


def format_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None, *,
              ssl_cn: str | None = None, crc: bool = False, tlvs: bytes = b"") -> bytes:
    """A v2 header (§2.2): PROXY over TCP for ``source`` → ``destination`` (address text, port
    0–65535; an IPv4-mapped IPv6 address is sent as IPv4 when the other end is IPv4, as
    :func:`format_v1` does), or LOCAL when both are None.

    ``ssl_cn``: the subject CN of a client certificate the relay **verified** on this connection —
    a ``PP2_TYPE_SSL`` TLV (§2.2.7: ``client`` = ``PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN``,
    ``verify`` = 0) with a ``PP2_SUBTYPE_SSL_CN`` sub-TLV; it must be what :func:`parse_v2`
    accepts (1–64 printable ASCII characters, X.520 ub-common-name). Pass None for a client
    without one (or whose certificate did not verify): no SSL TLV, no identity.
    ``crc``: a ``PP2_TYPE_CRC32C`` TLV (§2.2.8); ``tlvs``: raw TLV bytes appended (tests).

    Raises ValueError for an address that is not an IP address, a port out of range, mixed
    families, or a CN the receiver would refuse — a relay must never send what the switch closes
    the connection for."""
    if source is None or destination is None:
        ver_cmd, fam, block = 0x20 | CMD_LOCAL, 0x00, b""
    else:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        if src.version != dst.version:  # a mapped IPv4 peer on an IPv6 socket, or the reverse
            src = getattr(src, "ipv4_mapped", None) or src
            dst = getattr(dst, "ipv4_mapped", None) or dst
        if src.version != dst.version:
            raise ValueError("source and destination are of different address families")
        sport, dport = int(source[1]), int(destination[1])
        if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
            raise ValueError("a port is 0-65535")
        family = AF_INET if src.version == 4 else AF_INET6
        ver_cmd, fam = 0x20 | CMD_PROXY, (family << 4) | PROTO_STREAM
        block = src.packed + dst.packed + struct.pack(">HH", sport, dport)
    extra = tlvs
    if ssl_cn is not None:
        if not cn_sendable(ssl_cn):
            raise ValueError("a certificate CN sent in a PROXY header is 1-64 printable ASCII characters")
        cn = ssl_cn.encode("ascii")
        sub = bytes([PP2_SUBTYPE_SSL_CN]) + struct.pack(">H", len(cn)) + cn
        value = bytes([PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN]) + struct.pack(">I", 0) + sub
        extra += bytes([PP2_TYPE_SSL]) + struct.pack(">H", len(value)) + value
    if crc:
        extra += bytes([PP2_TYPE_CRC32C]) + struct.pack(">H", 4) + b"\x00" * 4
    body = block + extra
    if V2_HEAD + len(body) > V2_MAX:
        raise ValueError(f"a PROXY v2 header is at most {V2_MAX} bytes here")
    out = bytearray(V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack(">H", len(body)) + body)
    if crc:
        struct.pack_into(">I", out, len(out) - 4, crc32c(bytes(out)))
    return bytes(out)


def cn_sendable(cn: str) -> bool:
    """Can ``cn`` travel in a ``PP2_SUBTYPE_SSL_CN`` that :func:`parse_v2` accepts: 1–64
    characters (X.520 ub-common-name), printable ASCII (0x20–0x7E)?"""
    return 0 < len(cn) <= _CN_MAX and all(" " <= ch <= "~" for ch in cn)


# -- CRC-32C (Castagnoli), as §2.2.8 requires; a checksum, not cryptography --------------------

def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (RFC 3720 §B.4 polynomial 0x1EDC6F41, reflected 0x82F63B78)."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
