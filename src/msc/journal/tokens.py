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

import hashlib
import hmac
import re

TOKEN_LEN = 16

#: Person and vehicle identifiers (NCIC tags), plus the CORI requester/recipient (PPP §1.7.1 A).
TOKEN_TAGS = (
    "NAM", "DOB", "SOC", "OLN", "LIC", "VIN", "FBI", "SID", "CII", "MNU", "NIC", "OCA", "ATN", "REL",
)
_FIELD_RE = re.compile(r"(?<![A-Z0-9])(" + "|".join(TOKEN_TAGS) + r")/([^.\r\n]*)")
_SPACE_RE = re.compile(r"\s+")
_COMMA_RE = re.compile(r"\s*,\s*")


def normalize(value: str) -> str:
    v = _SPACE_RE.sub(" ", value.strip().upper())
    return _COMMA_RE.sub(",", v)


def fields_of(text: str) -> set[tuple[str, str]]:
    """Every tokenizable (tag, normalized value) in a message text."""
    out = set()
    for tag, value in _FIELD_RE.findall(text):
        v = normalize(value)
        if v:
            out.add((tag, v))
    return out


def token(index_key: bytes, tag: str, value: str) -> bytes:
    return hmac.new(index_key, f"{tag}:{value}".encode(), hashlib.sha256).digest()[:TOKEN_LEN]


def tokens_for(index_key: bytes, text: str, requester: str | None = None, recipient: str | None = None) -> list[bytes]:
    fields = fields_of(text)
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
