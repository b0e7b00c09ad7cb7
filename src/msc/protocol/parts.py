"""Outputs in parts: an output longer than a station's frames can carry (PROTOCOL.md §5).

An upstream may send an answer of up to the link's frame limit (1 MiB); a station's listener may
take far less (``max_frame``, default 32768). Such an output is sent as ``n`` outputs, each with
its own OSN (delivery-tracked and acknowledged like any output), whose payloads are::

    HEADER ".MSC.PART " i "/" n "." CHUNK          ; i = 1 … n, no leading zeros

``HEADER`` is the output's own header (the request's mnemonic + ref for an answer) and the
chunks, concatenated in part order, are exactly the text after ``HEADER.`` as received. A chunk
ends at a line break (CR LF or LF) or a field separator ``.`` when one lies in the last quarter of
the room available, so parts usually break where a reader would; a CR LF pair is never split.
Criminal-history answers arrive the same way from the state (several messages, one request).

Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

import re

#: The bytes of a frame's ``length`` that are not payload: type (1) and xid (4) (PROTOCOL.md §1).
FRAME_OVERHEAD = 5
PART_MARK = b".MSC.PART "


def max_payload(max_frame: int) -> int:
    """The largest payload a frame of at most ``max_frame`` (the ``length`` field) carries."""
    return max_frame - FRAME_OVERHEAD


def _cut(text: bytes, start: int, room: int) -> int:
    """Where the chunk starting at ``start`` ends, given ``room`` bytes for it (> 0)."""
    end = start + room
    if end >= len(text):
        return len(text)
    floor = start + max(1, (room * 3) // 4)
    for sep in (b"\n", b"."):
        i = text.rfind(sep, floor - 1, end)
        if i >= floor - 1:
            return i + 1
    if text[end - 1 : end] == b"\r" and text[end : end + 1] == b"\n" and end - 1 > start:
        return end - 1  # never between CR and LF
    return end


def split_output(payload: bytes, limit: int) -> list[bytes]:
    """``payload`` (``HEADER.TEXT``) as parts of at most ``limit`` bytes each; ``[payload]`` if it
    fits. Raises ValueError if ``limit`` leaves no room for text after a part's header."""
    if len(payload) <= limit:
        return [payload]
    header, dot, text = payload.partition(b".")
    if not dot:
        header, text = payload[:0], payload
    n = 2
    while True:  # the marker's length depends on the number of parts' digits
        fixed = len(header) + len(PART_MARK) + 2 * len(str(n)) + 2  # "i/n" and the "."
        room = limit - fixed
        if room < 1:
            raise ValueError(f"a frame of {limit} payload bytes cannot carry a part of this output")
        chunks = []
        i = 0
        while i < len(text):
            j = _cut(text, i, room)
            chunks.append(text[i:j])
            i = j
        if len(str(len(chunks))) <= len(str(n)):
            break
        n = len(chunks)
    total = len(chunks)
    return [b"%s%s%d/%d.%s" % (header, PART_MARK, k, total, c) for k, c in enumerate(chunks, 1)]


#: A part's payload: HEADER ".MSC.PART " i "/" n "." CHUNK (the header has no ".").
_PART = re.compile(rb"([^.]*)\.MSC\.PART ([1-9][0-9]*)/([1-9][0-9]*)\.(.*)", re.S)


def join_parts(parts: list[bytes]) -> bytes:
    """The inverse of :func:`split_output` (what a station does with parts 1 … n, in order).

    One output that is not a part is returned as it is — also when its text merely contains
    ``MSC.PART`` (an output that fitted is never marked). Raises ValueError if ``parts`` are
    not parts 1 … n of one output."""
    if len(parts) == 1 and _PART.fullmatch(parts[0]) is None:
        return parts[0]
    matches = [_PART.fullmatch(p) for p in parts]
    n = len(parts)
    header = matches[0].group(1) if matches[0] else None
    for i, m in enumerate(matches, 1):
        if m is None or m.group(1) != header or int(m.group(2)) != i or int(m.group(3)) != n:
            raise ValueError(f"part {i} of {n} is not part {i}/{n} of one output")
    return b"%s.%s" % (header, b"".join(m.group(4) for m in matches if m))


__all__ = ["FRAME_OVERHEAD", "PART_MARK", "join_parts", "max_payload", "split_output"]
