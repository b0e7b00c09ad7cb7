"""Parsing and formatting of message text (PROTOCOL.md §2–§4, §7).

``parse_input(payload)`` turns the payload of a client's ``M`` frame into a frozen
:class:`Input` or raises :class:`ProtocolError` with the §6 code for the first thing wrong.
``parse_upstream(payload)`` does the same for what a state/federal system sends msc.
Formatting functions produce the bytes msc sends. Nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Union

import msgspec

from msc.protocol import grammar as g
from msc.protocol.codes import ProtocolError, Reject

# Keys msc itself understands (PROTOCOL.md §2); every other key is looked up in the route table.
LOGON = "LOGON"
LOGOFF = "LOGOFF"
BIND = "BIND"
PWD = "PWD"
AM = "AM"
SPECIAL_KEYS = frozenset((LOGON, LOGOFF, BIND, PWD, AM))

# PROTOCOL.md §2 CORI: purpose, requester, secondary recipient (PPP §1.7.1 A).
PURPOSE_TAG = "PUR"
REQUESTER_TAG = "ATN"
RECIPIENT_TAG = "REL"

#: How many '.'-separated splits of a PWD body are tried as OLD.NEW (see :class:`PasswordChange`).
MAX_PWD_SPLITS = 8


class Logon(msgspec.Struct, frozen=True, tag="logon"):
    """``LOGON.USERID.OTP.PASSWORD``. ``otp`` is None when the client sent ``-``."""

    user: str
    otp: str | None
    password: str

    def __repr__(self) -> str:  # never let a password reach a log through repr()
        return f"Logon(user={self.user!r}, otp={'***' if self.otp else None}, password='***')"


class Logoff(msgspec.Struct, frozen=True, tag="logoff"):
    """``LOGOFF``: end the operator session."""


class Bind(msgspec.Struct, frozen=True, tag="bind"):
    """``BIND``: bind a host or printer connection to its station."""


class PasswordChange(msgspec.Struct, frozen=True, tag="pwd"):
    """``PWD.OLDPASSWORD.NEWPASSWORD``.

    Both passwords may contain '.' (CJIS IA-5 allows every printable character), so the body is
    ambiguous on its face. :meth:`candidates` yields every (old, new) split; the session takes the
    one whose *old* half verifies against the stored hash.
    """

    secret: str

    def candidates(self) -> list[tuple[str, str]]:
        out = []
        start = 0
        while len(out) < MAX_PWD_SPLITS:
            i = self.secret.find(".", start)
            if i < 0:
                break
            old, new = self.secret[:i], self.secret[i + 1 :]
            if old and new:
                out.append((old, new))
            start = i + 1
        return out

    def __repr__(self) -> str:
        return "PasswordChange(secret='***')"


class AdminText(msgspec.Struct, frozen=True, tag="am"):
    """``AM.ORI.DEST[,DEST…].TXT free text`` — an administrative message."""

    ori: str
    destinations: tuple[str, ...]
    text: str


class Transaction(msgspec.Struct, frozen=True, tag="txn"):
    """``MKE.ORI.TAG/value.TAG/value…`` — anything routed by the route table."""

    ori: str
    fields: tuple[tuple[str, str], ...] = ()

    def get(self, tag: str) -> str | None:
        for t, v in self.fields:
            if t == tag:
                return v
        return None


Body = Union[Logon, Logoff, Bind, PasswordChange, AdminText, Transaction]


class Input(msgspec.Struct, frozen=True):
    """One parsed client message.

    ``text`` is everything after the extended headers (``MKE[.BODY]``) exactly as received.
    """

    header: str
    oif: str | None
    taf: str | None
    mke: str
    body: Body
    text: str

    @property
    def mnemonic(self) -> str:
        return self.header[:4]

    @property
    def ref(self) -> str:
        return self.header[4:]

    @property
    def ori(self) -> str | None:
        body = self.body
        if isinstance(body, (Transaction, AdminText)):
            return body.ori
        return None

    def normalized(self, oif: str, taf: str) -> str:
        """The full text msc sends upstream: ``HEADER.*OIF.#TAF.TEXT`` (PPP §1.6.6 C)."""
        return f"{self.header}.*{oif}.#{taf}.{self.text}"

    def journal_text(self) -> str:
        """The message as it is journaled: complete, with LOGON/PWD secrets redacted (§7)."""
        ext = "".join(
            (f".*{self.oif}" if self.oif else "", f".#{self.taf}" if self.taf else "")
        )
        body = self.body
        if isinstance(body, Logon):
            return f"{self.header}{ext}.{LOGON}.{body.user}.*.*"
        if isinstance(body, PasswordChange):
            return f"{self.header}{ext}.{PWD}.*.*"
        return f"{self.header}{ext}.{self.text}"

    def __repr__(self) -> str:
        return f"Input(header={self.header!r}, oif={self.oif!r}, taf={self.taf!r}, mke={self.mke!r})"


def _fail(reject: Reject, detail: str | None = None) -> ProtocolError:
    return ProtocolError(reject, detail)


# Everything before the first CR/LF of a message must be an AM up to the start of its free text.
_AM_BEFORE_FREE_TEXT = re.compile(rb"[^.\r\n]*(?:\.[*#][^.\r\n]*){0,2}\.AM\.[^.\r\n]*\.[^.\r\n]*\.TXT")


def _check_chars(payload: bytes) -> bool:
    """Characters first (PROTOCOL.md §1): E102 for anything outside 0x20–0x7E, except CR/LF
    inside the free text of an AM. Returns True if the payload has (allowed) CR/LF."""
    if payload.isascii() and g.NOT_PRINTABLE.search(payload) is None:
        return False
    if g.NOT_PRINTABLE_OR_NEWLINE.search(payload) is not None:
        raise _fail(Reject.E102)
    first = min(i for i in (payload.find(b"\r"), payload.find(b"\n")) if i >= 0)
    if _AM_BEFORE_FREE_TEXT.match(payload, 0, first) is None:
        raise _fail(Reject.E102, "CR/LF ONLY ALLOWED IN ADMINISTRATIVE TEXT")
    return True


def parse_input(payload: bytes) -> Input:
    """Parse the payload of a client ``M`` frame (PROTOCOL.md §2).

    Raises :class:`ProtocolError` with the code for the first problem found, checking in wire
    order: characters (E102), header (E103), OIF (E104), TAF (E105), key (E106), then the body
    (E107 ORI, E108 fields).
    """
    has_newline = _check_chars(payload)
    s = payload.decode("ascii")
    dot = s.find(".")
    header = s if dot < 0 else s[:dot]
    if g.HEADER_RE.match(header) is None:
        raise _fail(Reject.E103)
    if dot < 0:
        raise _fail(Reject.E106, "MESSAGE KEY MISSING")
    pos = dot + 1
    oif = taf = None
    if s.startswith("*", pos):
        end = s.find(".", pos)
        value = s[pos + 1 :] if end < 0 else s[pos + 1 : end]
        if g.USER_ID_RE.match(value) is None:
            raise _fail(Reject.E104, "OIF MALFORMED")
        oif = value
        if end < 0:
            raise _fail(Reject.E106, "MESSAGE KEY MISSING")
        pos = end + 1
    if s.startswith("#", pos):
        end = s.find(".", pos)
        value = s[pos + 1 :] if end < 0 else s[pos + 1 : end]
        if g.TAF_VALUE_RE.match(value) is None:
            raise _fail(Reject.E105, "TAF MALFORMED")
        taf = value
        if end < 0:
            raise _fail(Reject.E106, "MESSAGE KEY MISSING")
        pos = end + 1
    text = s[pos:]
    end = text.find(".")
    mke = text if end < 0 else text[:end]
    if g.MKE_RE.match(mke) is None:
        raise _fail(Reject.E106)
    rest = None if end < 0 else text[end + 1 :]
    if has_newline and mke != AM:
        raise _fail(Reject.E102, "CR/LF ONLY ALLOWED IN ADMINISTRATIVE TEXT")
    body = _parse_body(mke, rest, has_newline)
    return Input(header=header, oif=oif, taf=taf, mke=mke, body=body, text=text)


def _parse_body(mke: str, rest: str | None, has_newline: bool) -> Body:
    if mke == LOGON:
        return _parse_logon(rest)
    if mke in (LOGOFF, BIND):
        if rest is not None:
            raise _fail(Reject.E108, f"{mke} TAKES NO FIELDS")
        return Logoff() if mke == LOGOFF else Bind()
    if mke == PWD:
        if not rest or "." not in rest:
            raise _fail(Reject.E108, "PWD NEEDS OLDPASSWORD.NEWPASSWORD")
        change = PasswordChange(rest)
        if not change.candidates():
            raise _fail(Reject.E108, "PWD NEEDS OLDPASSWORD.NEWPASSWORD")
        return change
    if mke == AM:
        return _parse_admin(rest, has_newline)
    return _parse_transaction(rest)


def _parse_logon(rest: str | None) -> Logon:
    parts = rest.split(".", 2) if rest is not None else []
    if len(parts) != 3:
        raise _fail(Reject.E108, "LOGON NEEDS USERID.OTP.PASSWORD")
    user, otp, password = parts
    if g.USER_ID_RE.match(user) is None:
        raise _fail(Reject.E108, "LOGON USER ID MALFORMED")
    if g.OTP_RE.match(otp) is None:
        raise _fail(Reject.E108, "LOGON OTP MALFORMED")
    if not password:
        raise _fail(Reject.E108, "LOGON PASSWORD MISSING")
    return Logon(user=user, otp=None if otp == "-" else otp, password=password)


def _parse_ori(value: str | None) -> str:
    if not value or g.ORI_RE.match(value) is None:
        raise _fail(Reject.E107)
    return value


def _parse_admin(rest: str | None, has_newline: bool) -> AdminText:
    parts = rest.split(".", 2) if rest is not None else []
    ori = _parse_ori(parts[0] if parts else None)
    if len(parts) < 3:
        raise _fail(Reject.E108, "AM NEEDS ORI.DEST.TXT")
    head = parts[0] + "." + parts[1]
    if has_newline and ("\r" in head or "\n" in head):
        raise _fail(Reject.E102, "CR/LF ONLY ALLOWED IN ADMINISTRATIVE TEXT")
    dests = tuple(parts[1].split(","))
    for d in dests:
        if g.DESTINATION_RE.match(d) is None:
            raise _fail(Reject.E108, "AM DESTINATION MALFORMED")
    free = parts[2]
    if not free.startswith("TXT"):
        raise _fail(Reject.E108, "AM TEXT MUST START WITH TXT")
    free = free[3:]
    if free[:1] in (" ", "/"):
        free = free[1:]
    if not free.strip():
        raise _fail(Reject.E108, "AM TEXT MISSING")
    return AdminText(ori=ori, destinations=dests, text=free)


def _parse_transaction(rest: str | None) -> Transaction:
    if rest is None:
        raise _fail(Reject.E107)
    parts = rest.split(".")
    ori = _parse_ori(parts[0])
    fields = []
    for part in parts[1:]:
        if len(part) < 5 or part[3] != "/" or g.TAG_RE.match(part[:3]) is None:
            raise _fail(Reject.E108, "FIELD MUST BE TAG/VALUE")
        fields.append((part[:3], part[4:]))
    return Transaction(ori=ori, fields=tuple(fields))


def redact(text: str) -> str:
    """Redact LOGON/PWD secrets from *any* text, parseable or not (PROTOCOL.md §7).

    Rejected messages are journaled too; a malformed LOGON must not put its password on disk.
    """
    parts = text.split(".")
    # The key follows the header and any extended headers; a client that left the header out
    # entirely must not get its password journaled either.
    i = 0 if parts[0] in (LOGON, PWD) else 1
    while i < len(parts) and parts[i][:1] in ("*", "#"):
        i += 1
    if i >= len(parts):
        return text
    key = parts[i]
    if key == LOGON:
        keep = parts[: i + 2]  # header … LOGON USERID (the user ID is kept, §7)
        return ".".join(keep) + (".*.*" if len(parts) > i + 2 else "")
    if key == PWD:
        return ".".join(parts[: i + 1]) + (".*.*" if len(parts) > i + 1 else "")
    return text


def decode_lossy(payload: bytes) -> str:
    """Text of a payload that may not be ASCII, for the journal of a rejected message."""
    return payload.decode("ascii", "backslashreplace")


# --- outputs ------------------------------------------------------------------------------

SYS_HEADER = "SYS"


def format_output(header: str, text: str) -> bytes:
    """``HEADER.TEXT`` (PROTOCOL.md §3)."""
    return f"{header}.{text}".encode("ascii", "replace")


def banner(text: str) -> bytes:
    """``SYS.BANNER.<system use notification>`` (CJIS AC-8)."""
    return format_output(SYS_HEADER, f"BANNER.{text}")


def msc_notice(header: str, reject: Reject, detail: str | None = None) -> bytes:
    """``HEADER.MSC.<code> <reason>``: the fate of an accepted request (PROTOCOL.md §4)."""
    return format_output(header, f"MSC.{reject.code} {detail or reject.reason}")


def format_pairs(**pairs: str) -> bytes:
    """``KEY/VALUE.KEY/VALUE`` — the payload of an ``A`` frame (PROTOCOL.md §1)."""
    return ".".join(f"{k}/{v}" for k, v in pairs.items()).encode("ascii")


def parse_pairs(payload: bytes) -> dict[str, str]:
    """Parse an ``A`` payload; malformed pairs raise E108."""
    if not payload:
        return {}
    try:
        s = payload.decode("ascii")
    except UnicodeDecodeError:
        raise _fail(Reject.E102) from None
    out = {}
    for part in s.split("."):
        key, sep, value = part.partition("/")
        if not sep or not key:
            raise _fail(Reject.E108, "ACK PAYLOAD MUST BE KEY/VALUE")
        out[key] = value
    return out


def parse_nak(payload: bytes) -> tuple[str, str]:
    """Split an ``N`` payload into (code, reason). Unknown or missing codes become E502."""
    s = payload.decode("ascii", "replace")
    code, _, reason = s.partition(" ")
    if Reject.lookup(code) is None:
        return Reject.E502.code, s or Reject.E502.reason
    return code, reason or Reject[code].reason


# --- upstream -----------------------------------------------------------------------------


class UpstreamMessage(msgspec.Struct, frozen=True):
    """A message from a state/federal system: ``DEST.TEXT`` (PROTOCOL.md §4).

    ``dest`` is a mnemonic (+ ref) for responses, or a mnemonic, ORI or group for unsolicited
    traffic. ``mke``/``ori``/``fields`` are filled when the text is NCIC-style, for the journal.
    """

    dest: str
    text: str
    mke: str | None = None
    ori: str | None = None

    @property
    def mnemonic(self) -> str:
        return self.dest[:4]

    @property
    def kind(self) -> str | None:
        """What the classification of unsolicited traffic looks at: the NCIC notification prefix
        (``$.L.``, ``$.H.`` …) when the text starts with one, else the message key (``YQ``,
        ``AM`` …), else None."""
        m = g.NCIC_NOTIFICATION_RE.match(self.text)
        return m.group(0) if m is not None else self.mke


def parse_upstream(payload: bytes) -> UpstreamMessage:
    """Parse an ``M`` frame from an upstream. Responses may span lines (CR/LF allowed)."""
    if not payload.isascii() or g.NOT_PRINTABLE_OR_NEWLINE.search(payload) is not None:
        raise _fail(Reject.E102)
    s = payload.decode("ascii")
    dest, sep, text = s.partition(".")
    if g.DESTINATION_RE.match(dest) is None:
        raise _fail(Reject.E103, "DESTINATION MALFORMED")
    if not sep or not text:
        raise _fail(Reject.E106, "TEXT MISSING")
    notification = g.NCIC_NOTIFICATION_RE.match(text)
    if notification is not None:  # "$.L.ORI…": no message key; the record's ORI follows
        at = g.ORI_AT_START_RE.match(text, notification.end())
        return UpstreamMessage(dest=dest, text=text, mke=None, ori=at.group(1) if at else None)
    parts = text.split(".", 2)
    mke = parts[0] if g.MKE_RE.match(parts[0]) else None
    ori = parts[1] if mke and len(parts) > 1 and g.ORI_RE.match(parts[1]) else None
    return UpstreamMessage(dest=dest, text=text, mke=mke, ori=ori)


def format_upstream(dest: str, text: str) -> bytes:
    """What an upstream (or a stub) sends msc: ``DEST.TEXT``."""
    return f"{dest}.{text}".encode("ascii", "replace")
