"""Redaction of logon and password-change secrets from any text (PROTOCOL.md §7).

A parsed ``LOGON`` or ``PWD`` is journaled through :meth:`msc.protocol.message.Input.journal_text`.
Everything that did *not* parse — a rejected message, a flood the rate limit refused — is
journaled through :func:`redact`, which must find a secret however the client mangled the form:
any letter case (``logon``, ``Logon``), any separator (``.`` space ``/`` ``,`` ``-`` …), with or
without the header or the OIF/TAF, truncated anywhere, with non-ASCII letters (compatibility forms
such as full-width ``ＬＯＧＯＮ`` fold to ASCII), and with non-ASCII bytes shown as ``\\xNN``
escapes by :func:`~msc.protocol.message.decode_lossy` (decoded again as UTF-8 to be recognised).

The rule, on the *fields* of the text (runs of letters, digits, ``*`` and ``#``; everything else
separates):

1. fields that start with ``*`` (OIF) or ``#`` (TAF, with the ``:``/``-`` pieces of an IP or
   MAC address after it, unless such a piece is a key word or starts a two-word key) are skipped;
2. the **key** is the first of the next :data:`KEY_WINDOW` fields that is a secret word
   (:data:`SECRET_WORDS`, also glued to a header or a user ID, or a two-word form such as
   ``LOG ON``): the header may be missing, mistyped or split;
3. after a logon word, the user ID is kept — it is not a secret (§7) — only when what follows
   the key is a well-formed ``LOGON`` body (PROTOCOL.md §2): ``.USERID.OTP.PASSWORD`` with a user
   ID of the grammar (:data:`msc.protocol.grammar.USER_ID`: six upper-case letters and digits),
   an OTP of six digits or ``-`` and a password that is not empty (or the ``.*.*`` of a text
   redacted already). Anything else — a wrong field count, a user ID out of the grammar, another
   separator — keeps nothing after the key: a user ID typed with a ``.`` in it (or a password
   typed at the ``User ID:`` prompt) splits the fields, and its first piece may be a password's;
4. everything after that is replaced by ``.*.*`` (a fixed mark: not even the length of the
   secret survives). Text with no key is returned unchanged.

Pure: no I/O, no state; only the first :data:`SCAN_LIMIT` characters are examined, so its cost
does not grow with the text.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from msc.protocol import grammar

#: Words that start a logon (the user ID after them is kept).
LOGON_WORDS = ("logon", "login", "signon", "signin")
#: Words that start a password change or otherwise announce a secret (nothing after is kept).
PASSWORD_WORDS = ("password", "passwort", "passwd", "passcode", "passw", "pwd")
#: Words that count only on their own (as a prefix they would catch too much: "passport").
EXACT_WORDS = frozenset(("pass", "pw", "pin"))
#: Two-word forms: ("log", "on") …
TWO_WORDS = frozenset((("log", "on"), ("log", "in"), ("sign", "on"), ("sign", "in")))
_TWO_FIRST = frozenset(first for first, _ in TWO_WORDS)
SECRET_WORDS = (*LOGON_WORDS, *PASSWORD_WORDS)
_EXACT_KEYS = frozenset((*SECRET_WORDS, *EXACT_WORDS))

#: How many fields (after skipping OIF/TAF) may come before the key: header, a split or
#: mistyped header, the key.
KEY_WINDOW = 3
#: The key is looked for in this many characters at the start of the text (a header, OIF, TAF
#: and key take fewer than 80, escaped non-ASCII letters 12 each): the cost of redacting a
#: rejected 32 KiB frame stays that of a short one.
SCAN_LIMIT = 512
MARK = ".*.*"

_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")
_BLANK = " \t\r\n."
#: What follows the key of a well-formed ``LOGON`` (PROTOCOL.md §2), or of one redacted already:
#: only then is the user ID kept (the module docstring, rule 3).
_LOGON_BODY_RE = re.compile(rf"\.(?P<user>{grammar.USER_ID})\.(?:(?:{grammar.OTP})\.(?P<password>.*)|\*\.\*\Z)",
                            re.DOTALL)
_LAYOUT = "\r\n\x0c\x7f"


@dataclass(frozen=True, slots=True)
class _Unit:
    norm: str  # NFKC + casefold of the character (or of an escaped UTF-8 sequence)
    start: int  # its span in the original text
    end: int


@dataclass(frozen=True, slots=True)
class _Field:
    norm: str  # the normalised text of the field
    start: int  # its span in the original text
    end: int
    sep: str  # the normalised separator text before it
    ends: tuple[int, ...] | None = None  # original end offset per normalised character (None: 1:1)

    def offset_after(self, n: int) -> int:
        """Original offset just after the first ``n`` normalised characters."""
        if n >= len(self.norm):
            return self.end
        return self.start + n if self.ends is None else self.ends[n - 1]

    def shifted(self, by: int) -> _Field:
        return _Field(self.norm, self.start + by, self.end + by, self.sep,
                      None if self.ends is None else tuple(e + by for e in self.ends))


_ASCII_FIELD_RE = re.compile(r"[A-Za-z0-9*#]+")


def _fold(ch: str) -> str:
    if ch.isascii():
        return ch.lower()
    return unicodedata.normalize("NFKC", ch).casefold()


def _units(text: str) -> Iterator[_Unit]:
    """The characters of ``text``, with runs of ``\\xNN`` escapes decoded as UTF-8."""
    i, n = 0, len(text)
    while i < n:
        m = _ESCAPE_RE.match(text, i) if text[i] == "\\" else None
        if m is None:
            yield _Unit(_fold(text[i]), i, i + 1)
            i += 1
            continue
        dec = codecs.getincrementaldecoder("utf-8")("replace")
        first = i
        while m is not None:
            out = dec.decode(bytes((int(m.group(1), 16),)))
            i = m.end()
            if out:
                yield _Unit("".join(_fold(c) for c in out), first, i)
                first = i
            m = _ESCAPE_RE.match(text, i)
        tail = dec.decode(b"", final=True)
        if tail or first < i:
            yield _Unit("".join(_fold(c) for c in tail) or "\ufffd", first, i)


def _is_word(u: _Unit) -> bool:
    return bool(u.norm) and all(c.isalnum() or c in "*#" for c in u.norm)


def _fields(text: str) -> Iterator[_Field]:
    """The fields of ``text`` in order (see the module docstring)."""
    if text.isascii() and "\\x" not in text:  # the common case, at C speed
        prev = 0
        for m in _ASCII_FIELD_RE.finditer(text):
            yield _Field(m.group().lower(), m.start(), m.end(), text[prev:m.start()])
            prev = m.end()
        return
    units: list[_Unit] = []
    sep: list[str] = []
    pending_sep = ""
    for u in _units(text):
        if _is_word(u):
            if not units:
                pending_sep = "".join(sep)
                sep = []
            units.append(u)
        else:
            if units:
                yield _from_units(units, pending_sep)
                units = []
            sep.append(u.norm)
    if units:
        yield _from_units(units, pending_sep)


def _from_units(units: list[_Unit], sep: str) -> _Field:
    ends: list[int] = []
    for u in units:
        ends += [u.end] * len(u.norm)
    return _Field("".join(u.norm for u in units), units[0].start, units[-1].end, sep, tuple(ends))


def _secret_word(word: str) -> tuple[str, int, int] | None:
    """(kind, start, end) of the secret word inside a field's normalised text, or None.

    ``kind`` is "logon" or "password". The word may stand alone, be glued after a header
    (``ICS1LOGON``) or before a user ID (``LOGONJD1234``).
    """
    if word in EXACT_WORDS:
        return "password", 0, len(word)
    for kind, words in (("logon", LOGON_WORDS), ("password", PASSWORD_WORDS)):
        for w in words:
            if word.startswith(w):
                return kind, 0, len(w)
            if word.endswith(w):
                return kind, len(word) - len(w), len(word)
    return None


def is_secret_word(word: str) -> bool:
    """Would a field spelled ``word`` be taken as a logon or password key?"""
    return _secret_word(_fold_all(word)) is not None


def _address_piece(word: str) -> bool:
    """Can ``word`` be a ``:``/``-`` separated piece of a TAF's IP or MAC address?

    Any word but a key: a secret word, or the first word of a two-word key (``LOG`` of
    ``#C0A8010A-LOG ON``), starts the text after the TAF.
    """
    return _secret_word(word) is None and word not in _TWO_FIRST


def _fold_all(s: str) -> str:
    return "".join(_fold(c) for c in s)


def _kept_user_end(text: str, key_end: int) -> int | None:
    """Where the user ID ends when what follows a logon key (at ``key_end``) is a well-formed
    ``LOGON`` body (``.USERID.OTP.PASSWORD``, PROTOCOL.md §2; or ``.USERID.*.*``, redacted), else
    None: nothing after the key is kept (fail safe, the module docstring's rule 3)."""
    m = _LOGON_BODY_RE.match(text, key_end)
    if m is None:
        return None
    password = m.group("password")
    if password is not None and not password.strip(_LAYOUT):
        return None
    return m.end("user")


def redact(text: str) -> str:
    """``text`` with every logon/password-change secret replaced by ``.*.*`` (see the module).

    ``redact(redact(t)) == redact(t)``; text that does not look like a logon or password
    change is returned unchanged; never raises.
    """
    gen = _fields(text[:SCAN_LIMIT])
    candidates: list[_Field] = []  # the first KEY_WINDOW + 1 fields that are not OIF/TAF
    after_taf = False
    for f in gen:
        lead = f.norm[0]
        if lead in "*#":
            after_taf = lead == "#"
            continue
        if after_taf and f.sep in (":", "-") and _address_piece(f.norm):
            continue  # the rest of a TAF that is an IP or MAC address (PPP §1.6.8 B)
        after_taf = False
        candidates.append(f)
        if len(candidates) > KEY_WINDOW:
            break
    key: tuple[str, int, _Field] | None = None  # (kind, where the secret may start, key field)
    for i, f in enumerate(candidates[:KEY_WINDOW]):
        if i + 1 < len(candidates) and (f.norm, candidates[i + 1].norm) in TWO_WORDS:
            nxt = candidates[i + 1]
            key = ("logon", nxt.end, nxt)
            break
        found = _secret_word(f.norm)
        if found is not None:
            if (found[0] == "logon" and i + 1 < len(candidates)
                    and candidates[i + 1].norm in LOGON_WORDS):
                # A header spelled like a logon key (LOGON.LOGON.…): the second is the key, so
                # the user ID after it is kept. Only for logon words: after a password key
                # nothing is kept, and a field there may be the start of the secret
                # (PWD.PASS:000.… - the old password is PASS:000).
                second = _secret_word(candidates[i + 1].norm)
                if second is not None:
                    f, found = candidates[i + 1], second
            kind, _start, end = found
            key = (kind, f.offset_after(end), f)
            break
    if key is None:
        return text
    kind, cut, field = key
    if kind == "logon" and cut == field.end:
        user_end = _kept_user_end(text, cut)
        if user_end is not None:
            cut = user_end
    if not text[cut:].strip(_BLANK):
        return text
    return text[:cut] + MARK
