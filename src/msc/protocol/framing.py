"""Link framing (PROTOCOL.md §1): typed, length-prefixed frames with exchange ids.

::

    frame   = length type xid payload
    length  = uint32 big-endian, bytes after this field (>= 5)
    type    = "M" | "A" | "N" | "H"
    xid     = uint32 big-endian

:class:`Framer` is sans-IO in the style of h11's receive buffer: feed it whatever bytes the
socket produced and take back complete frames. Work is O(bytes fed): a partial frame is never
rescanned from the start, and the buffer is compacted only once the consumed prefix dominates it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from msc.protocol.codes import FramingError

MSG = 0x4D  # "M"
ACK = 0x41  # "A"
NAK = 0x4E  # "N"
HEARTBEAT = 0x48  # "H"

FRAME_TYPES = frozenset((MSG, ACK, NAK, HEARTBEAT))
DEFAULT_MAX_FRAME = 32768
MAX_XID = 0xFFFFFFFF

_HEAD = struct.Struct(">IBI")  # length, type, xid
HEAD_SIZE = _HEAD.size  # 9
_MIN_LENGTH = 5  # type + xid


class Frame(NamedTuple):
    """One decoded frame. ``type`` is the ASCII code of the type letter (``MSG`` …)."""

    type: int
    xid: int
    payload: bytes

    @property
    def kind(self) -> str:
        return chr(self.type)


def encode_frame(ftype: int, xid: int, payload: bytes = b"") -> bytes:
    """Encode one frame. ``ftype`` is one of ``MSG``/``ACK``/``NAK``/``HEARTBEAT``."""
    if ftype not in FRAME_TYPES:
        raise ValueError(f"unknown frame type {ftype!r}")  # a programming error, not input
    return _HEAD.pack(len(payload) + _MIN_LENGTH, ftype, xid & MAX_XID) + payload


def message(xid: int, payload: bytes) -> bytes:
    return encode_frame(MSG, xid, payload)


def ack(xid: int, payload: bytes = b"") -> bytes:
    return encode_frame(ACK, xid, payload)


def nak(xid: int, code: str, reason: str) -> bytes:
    return encode_frame(NAK, xid, f"{code} {reason}".encode("ascii", "replace"))


def heartbeat(xid: int) -> bytes:
    return encode_frame(HEARTBEAT, xid)


class Framer:
    """Incremental frame decoder for one direction of one connection.

    ``feed(data)`` returns every frame completed by ``data``. A length above ``max_frame`` or
    below 5, or an unknown type byte, raises :class:`FramingError` (E101); the framer is then
    spent and the caller closes the connection. Frames returned before the error stay valid:
    the error is raised on the *next* call when good frames precede the bad one in one chunk,
    so the caller can process what was accepted first.
    """

    __slots__ = ("max_frame", "_buf", "_pos", "_error")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < _MIN_LENGTH:
            raise ValueError("max_frame must be at least 5")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (0 when the stream is at a frame boundary)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        if self._pos and self._pos == len(buf):
            # Common case: previous feed ended on a frame boundary.
            buf.clear()
            self._pos = 0
        buf += data
        frames: list[Frame] = []
        pos = self._pos
        end = len(buf)
        unpack = _HEAD.unpack_from
        while end - pos >= HEAD_SIZE:
            length, ftype, xid = unpack(buf, pos)
            if length < _MIN_LENGTH or length > self.max_frame:
                self._error = FramingError(f"FRAME LENGTH {length} OUTSIDE 5..{self.max_frame}")
                break
            if ftype not in FRAME_TYPES:
                self._error = FramingError(f"UNKNOWN FRAME TYPE 0x{ftype:02X}")
                break
            stop = pos + 4 + length
            if stop > end:
                break
            frames.append(Frame(ftype, xid, bytes(buf[pos + HEAD_SIZE : stop])))
            pos = stop
        self._pos = pos
        # Compact once the consumed prefix is at least half the buffer: amortized O(bytes).
        if pos and pos * 2 >= len(buf):
            del buf[:pos]
            self._pos = 0
        if self._error is not None and not frames:
            raise self._error
        return frames

    @property
    def failed(self) -> FramingError | None:
        """The pending framing error, if a bad frame header has been seen."""
        return self._error
