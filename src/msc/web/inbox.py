"""What an output is, for the operator's inbox (pure): an answer to one of the page's own requests
(linked by the header's reference, PROTOCOL.md §3), a notice about one (``MSC.Exxx``), a part of
one (``MSC.PART i/n``), or unsolicited traffic; and whether it is a **hit** or a **hit
confirmation request** — the two things a dispatcher must never miss.

Hits: an NCIC answer whose first line reports a hit (``NCIC WANTED PERSON HIT``, ``STOLEN VEHICLE
HIT`` — NCIC 2000 Operating Manual, the wanted person and vehicle files), an NCIC ``$.H.`` hit
notification; hit confirmation requests: Nlets ``YQ`` (Nlets §16: urgent ones must be answered
within 10 minutes). A ``NO HIT`` line is not a hit.
"""

from __future__ import annotations

import re

from msc.protocol.message import (
    output_bytes,  # noqa: F401  (the byte policy the switch applied)
    parse_notice,
)

_HIT = re.compile(r"(?<![A-Z])(?<!NO )HIT(?![A-Z])")
_FIELD = re.compile(r"[A-Z]{3}/")
_PART = re.compile(r"MSC\.PART (\d+)/(\d+)\.(.*)", re.S)


def classify(payload: bytes, mnemonic: str, own_refs: set[str] | frozenset[str]) -> dict:
    """``{"header", "ref", "text", "kind", "alert", "code", "part"}`` for one output's payload.

    ``kind``: ``answer`` | ``notice`` | ``unsolicited``; ``ref``: the request it answers (one of
    ``own_refs``) or None; ``alert``: ``hit`` | ``confirm`` | None; ``part``: [i, n] or None.
    """
    text = payload.decode("latin-1")  # the switch delivers ASCII (bytes it cannot deliver as <HH>)
    header, _, rest = text.partition(".")
    ref = header[4:] if header[:4] == mnemonic and header[4:] in own_refs else None
    out: dict[str, object] = {"header": header, "ref": ref, "text": rest, "kind": "answer" if ref else "unsolicited",
           "alert": None, "code": None, "part": None}
    notice = parse_notice(text)  # the switch's one reader of its notices (a part is never one)
    if notice is not None:
        out["kind"], out["code"] = "notice", notice[0]
        return out
    m = _PART.match(rest)
    if m:
        out["part"] = [int(m.group(1)), int(m.group(2))]
        rest = m.group(3)
    first = rest.split("\r", 1)[0].split("\n", 1)[0]
    key = first.split(".", 1)[0]
    # The result words of an NCIC answer stand between the ORI and the data fields; a hit is
    # said there, never inside a field (a name may be spelled H-I-T).
    words = " ".join(seg for seg in first.split(".")[1:] if not _FIELD.match(seg))
    if key == "YQ":
        out["alert"] = "confirm"
    elif first.startswith("$.H.") or (key not in ("YR", "$") and _HIT.search(words)):
        out["alert"] = "hit"
    return out
