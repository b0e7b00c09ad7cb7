"""Blind index: searchable tokens for person and vehicle fields (JOURNAL.md "Encryption").

A field such as ``NAM/SMITH, JOHN`` is normalized (``NAM:SMITH,JOHN``) and stored only as the
first 16 bytes of HMAC-SHA-256 under the month's index key. An investigator's ``--token`` is
normalized the same way, HMAC'd with each month's key, matched, and the candidates are then
decrypted and confirmed.

Leakage, stated plainly: within one month, equal field values produce equal tokens, so someone
holding the database file can see that two records share a name or plate (not what it is).
Tokens are not comparable across months (each month has its own index key), and destroying a
month's key (retention) makes its tokens meaningless.
"""

from __future__ import annotations

import hmac
import re

TOKEN_LEN = 16

#: Person and vehicle identifiers (NCIC tags), plus the CORI requester/recipient (PPP §1.7.1 A).
TOKEN_TAGS = (
    "NAM", "DOB", "SOC", "OLN", "LIC", "VIN", "FBI", "SID", "CII", "MNU", "NIC", "OCA", "ATN", "REL",
)
_SPACE_RE = re.compile(r"\s+")
_COMMA_RE = re.compile(r"\s*,\s*")


def normalize(value: str) -> str:
    v = value.strip().upper()
    if "  " in v or "," in v or "\t" in v:  # the common case (no commas, single spaces) skips the regexes
        v = _COMMA_RE.sub(",", _SPACE_RE.sub(" ", v))
    return v


_TAG_SET = frozenset(TOKEN_TAGS)
# A value ends at the field separator or at a line or page break (layout, PROTOCOL.md §1).
_END_RE = re.compile(r"[.\r\n\f]")
# The Nlets marker that ends the routing fields ("….TXTOLN/N1234567"): a tag right after it is a
# field like any other (PROTOCOL.md §2, Nlets form).
_TXT = "TXT"


def _starts_field(text: str, i: int) -> bool:
    """Does the tag ending at ``text[i]`` ('/') begin a field? It does at the start, after any
    character that is not a letter or digit, and right after a ``TXT`` marker that itself begins
    a part."""
    if i == 3 or not text[i - 4].isalnum():
        return True
    return text[i - 6 : i - 3] == _TXT and (i == 6 or not text[i - 7].isalnum())


def fields_of(text: str) -> set[tuple[str, str]]:
    """Every tokenizable (tag, normalized value) in a message text.

    A field is ``TAG/value`` where TAG is one of :data:`TOKEN_TAGS` not preceded by a letter or
    digit (or directly after the Nlets ``TXT`` marker), and the value runs to the next '.', CR,
    LF or FF; DEL (the teletype rubout) is ignored and HT reads as a space. Walking the '/'
    characters is several times faster than a regex scan of the whole text, and this runs for
    every journaled record.
    """
    if "\x7f" in text:
        text = text.replace("\x7f", "")
    out = set()
    i = text.find("/")
    while i != -1:
        if i >= 3 and text[i - 3 : i] in _TAG_SET and _starts_field(text, i):
            m = _END_RE.search(text, i + 1)
            v = normalize(text[i + 1 : m.start() if m else len(text)])
            if v:
                out.add((text[i - 3 : i], v))
        i = text.find("/", i + 1)
    return out


def token(index_key: bytes, tag: str, value: str) -> bytes:
    return hmac.digest(index_key, f"{tag}:{value}".encode(), "sha256")[:TOKEN_LEN]


def tokens_for(index_key: bytes, text: str, requester: str | None = None, recipient: str | None = None) -> list[bytes]:
    fields = fields_of(text) if "/" in text else set()
    if requester:
        fields.add(("ATN", normalize(requester)))
    if recipient:
        fields.add(("REL", normalize(recipient)))
    return [token(index_key, t, v) for t, v in fields]


def parse_query(spec: str) -> tuple[str, str]:
    """``"NAM:SMITH, JOHN"`` → ``("NAM", "SMITH,JOHN")``; raises ValueError on a bad spec."""
    tag, sep, value = spec.partition(":")
    tag = tag.strip().upper()
    if not sep or tag not in TOKEN_TAGS or not value.strip():
        raise ValueError(f"--token wants TAG:VALUE with TAG one of {', '.join(TOKEN_TAGS)}")
    return tag, normalize(value)


def matches(text: str, requester: str | None, recipient: str | None, tag: str, value: str) -> bool:
    """Confirm a candidate after decryption (tokens are truncated HMACs: rule out collisions)."""
    if tag == "ATN" and requester and normalize(requester) == value:
        return True
    if tag == "REL" and recipient and normalize(recipient) == value:
        return True
    return (tag, value) in fields_of(text)
