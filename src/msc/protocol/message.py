"""Parsing and formatting of message text (PROTOCOL.md §2–§4, §7).

``parse_input(payload)`` turns the payload of a client's ``M`` frame into a frozen
:class:`Input` or raises :class:`ProtocolError` with the §6 code for the first thing wrong.
``parse_upstream(payload)`` does the same for what a state/federal system sends msc.
Formatting functions produce the bytes msc sends. Nothing here does I/O.

Why one module of ~570 lines (issue 15: none over ~500 without a reason): it is the message
grammar of PROTOCOL.md §2–§4 and §7 as one vocabulary — each body type beside its parser and the
formats of what msc sends — which a reader checks against the specification section by section.
"""

from __future__ import annotations

import re

import msgspec

from msc.protocol import grammar as g
from msc.protocol.codes import ProtocolError, Reject
from msc.protocol.redact import redact as redact  # re-exported: the journal path of rejected text

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
        out: list[tuple[str, str]] = []
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
    """``AM.ORI.DEST[,DEST…][.*CONTROL].TXT free text`` — an administrative message.

    ``text`` is the free text exactly as sent (line breaks included); ``control`` holds the Nlets
    optional control field(s), with their asterisk.
    """

    ori: str
    destinations: tuple[str, ...]
    text: str
    control: tuple[str, ...] = ()


class Transaction(msgspec.Struct, frozen=True, tag="txn"):
    """A message routed by the route table, in either shape of PROTOCOL.md §2:

    - NCIC form ``MKE.ORI.TAG/value.TAG/value…``: ``destinations`` and ``control`` are empty;
    - Nlets form ``MKE.ORI.DEST[,DEST…][.*CONTROL].TXT TAG/value.TAG/value…``: ``destinations``
      are the 2-character state/region codes and 9-character ORIs, ``control`` the optional
      control field(s) with their asterisk.

    ``fields`` are the data fields in order, read without layout (line breaks, DEL) and with HT
    read as a space; a line that does not start with ``TAG/`` continues the value before it.
    The text forwarded upstream is the message as sent (``Input.text``), not these fields.
    """

    ori: str
    fields: tuple[tuple[str, str], ...] = ()
    destinations: tuple[str, ...] = ()
    control: tuple[str, ...] = ()

    @property
    def nlets(self) -> bool:
        """True for the Nlets form (a destination list and the TXT marker)."""
        return bool(self.destinations)

    def get(self, tag: str) -> str | None:
        """The first value of ``tag``, or None."""
        for t, v in self.fields:
            if t == tag:
                return v
        return None

    def values(self, tag: str) -> list[str]:
        """Every value of ``tag``, in order."""
        return [v for t, v in self.fields if t == tag]


Body = Logon | Logoff | Bind | PasswordChange | AdminText | Transaction


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


def _bad_byte(payload: bytes) -> ProtocolError | None:
    """The byte policy of PROTOCOL.md §1 for client input: E102 for any byte outside
    printable ASCII, HT, LF, FF, CR and DEL (grammar.TEXT_CONTROLS)."""
    if payload.isascii() and g.NOT_PRINTABLE.search(payload) is None:
        return None
    m = g.NOT_TEXT.search(payload)
    if m is None:
        return None
    return _fail(Reject.E102, f"CHARACTER 0x{m.group()[0]:02X} NOT ALLOWED")


def _routing(value: str) -> str:
    """Routing fields (header, OIF, TAF, key, ORI, destinations, control, LOGON/PWD bodies)
    take no control byte at all, not even layout (PROTOCOL.md §1)."""
    if g.HAS_CONTROL.search(value) is not None:
        raise _fail(Reject.E102, "CONTROL CHARACTER IN ROUTING FIELDS")
    return value


def peek_key(payload: bytes) -> str | None:
    """The message key of a client ``M`` payload, found without parsing or checking it: the
    field after the header and the optional ``*OIF`` and ``#TAF`` (PROTOCOL.md §2); None when
    there is none or it is not ASCII. For a decision that must cost less than a parse (a request
    shed under overload, :mod:`msc.routing.shedding`); :func:`parse_input` still judges the message."""
    parts = payload.split(b".", 4)
    for part in parts[1:4]:
        if not part.startswith((b"*", b"#")):
            return part.decode("ascii") if part.isascii() else None
    return None


def parse_input(payload: bytes) -> Input:
    """Parse the payload of a client ``M`` frame (PROTOCOL.md §2).

    Raises :class:`ProtocolError` with the code for the first problem found, checking in wire
    order: characters (E102), header (E103), OIF (E104), TAF (E105), key (E106), then the body
    (E107 ORI, E108 fields). Layout at the end of the message (CR, LF, FF, DEL) is ignored for
    parsing and kept in ``Input.text`` (the text forwarded is the text as sent).
    """
    bad = _bad_byte(payload)
    if bad is not None:
        raise bad
    s = payload.decode("ascii")
    core = s.rstrip(g.LAYOUT) if s[-1:] in g.LAYOUT else s
    if not core:
        raise _fail(Reject.E103)
    dot = core.find(".")
    header = _routing(core if dot < 0 else core[:dot])
    if g.HEADER_RE.match(header) is None:
        raise _fail(Reject.E103)
    if dot < 0:
        raise _fail(Reject.E106, "MESSAGE KEY MISSING")
    pos = dot + 1
    oif = taf = None
    if core.startswith("*", pos):
        end = core.find(".", pos)
        value = _routing(core[pos + 1 :] if end < 0 else core[pos + 1 : end])
        if g.USER_ID_RE.match(value) is None:
            raise _fail(Reject.E104, "OIF MALFORMED")
        oif = value
        if end < 0:
            raise _fail(Reject.E106, "MESSAGE KEY MISSING")
        pos = end + 1
    if core.startswith("#", pos):
        end = core.find(".", pos)
        value = _routing(core[pos + 1 :] if end < 0 else core[pos + 1 : end])
        if g.TAF_VALUE_RE.match(value) is None:
            raise _fail(Reject.E105, "TAF MALFORMED")
        taf = value
        if end < 0:
            raise _fail(Reject.E106, "MESSAGE KEY MISSING")
        pos = end + 1
    end = core.find(".", pos)
    mke = _routing(core[pos:] if end < 0 else core[pos:end])
    if g.MKE_RE.match(mke) is None:
        raise _fail(Reject.E106)
    rest = None if end < 0 else core[end + 1 :]
    if mke == AM:
        body: Body = _parse_admin(rest, s[end + 1 :] if end >= 0 else None)
    else:
        body = _parse_body(mke, rest)
    return Input(header=header, oif=oif, taf=taf, mke=mke, body=body, text=s[pos:])


def _parse_body(mke: str, rest: str | None) -> Body:
    if mke == LOGON:
        return _parse_logon(None if rest is None else _routing(rest))
    if mke in (LOGOFF, BIND):
        if rest is not None:
            raise _fail(Reject.E108, f"{mke} TAKES NO FIELDS")
        return Logoff() if mke == LOGOFF else Bind()
    if mke == PWD:
        if not rest or "." not in rest:
            raise _fail(Reject.E108, "PWD NEEDS OLDPASSWORD.NEWPASSWORD")
        change = PasswordChange(_routing(rest))
        if not change.candidates():
            raise _fail(Reject.E108, "PWD NEEDS OLDPASSWORD.NEWPASSWORD")
        return change
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
    if not value or g.ORI_RE.match(_routing(value)) is None:
        raise _fail(Reject.E107)
    return value


#: At most this many destination-list and control parts are looked at before ``TXT``.
MAX_ROUTING_PARTS = 8


def _envelope(after: str, dest_re: re.Pattern[str], *, am: bool = False) -> tuple[tuple[str, ...], tuple[str, ...], int] | None:
    """Find the Nlets routing part of ``after`` (the text after ``ORI.``): a destination list,
    optional control fields, then ``TXT``. Returns (destinations, controls, offset of the data
    after TXT), or None when ``after`` does not start with a destination list (NCIC form)."""
    dests: list[str] = []
    controls: list[str] = []
    pos = 0
    for i in range(MAX_ROUTING_PARTS + 1):
        end = after.find(".", pos)
        part = after[pos:] if end < 0 else after[pos:end]
        lead = part.lstrip(g.LAYOUT)
        if i > 0 and lead.startswith(g.TXT_MARKER) and (am or not lead.startswith(g.TXT_MARKER + "/")):
            return tuple(dests), tuple(controls), pos + len(part) - len(lead) + len(g.TXT_MARKER)
        clean = part.strip(g.LAYOUT + " ")
        if g.HAS_CONTROL.search(clean) is not None:
            # A routing field with a control byte inside it is E102, not "not a routing field".
            bare = g.HAS_CONTROL.sub("", clean)
            if g.CONTROL_RE.match(bare) or all(dest_re.match(d) for d in g.DEST_SEP.split(bare)):
                _routing(clean)
        if i == 0:
            items = g.DEST_SEP.split(clean)
            if not all(dest_re.match(d) for d in items):
                return None
            _routing(part)
            dests.extend(items)
        elif g.CONTROL_RE.match(clean):
            controls.append(_routing(part))
        elif not controls and all(dest_re.match(d) for d in g.DEST_SEP.split(clean)):
            raise _fail(Reject.E108, "DESTINATIONS ARE ONE LIST SEPARATED BY COMMAS")
        else:
            break
        if end < 0:
            break
        pos = end + 1
    raise _fail(Reject.E108, "TXT MUST FOLLOW THE DESTINATIONS AND CONTROL FIELD")


_NLETS_DEST_RE = re.compile(rf"(?:{g.NLETS_DEST})\Z")


def _parse_transaction(rest: str | None) -> Transaction:
    if rest is None:
        raise _fail(Reject.E107)
    ori, sep, after = rest.partition(".")
    _parse_ori(ori)
    if not sep:
        return Transaction(ori=ori)
    env = _envelope(after, _NLETS_DEST_RE)
    if env is None:
        if not after:
            raise _fail(Reject.E108, "EMPTY FIELD")
        return Transaction(ori=ori, fields=_parse_data(after, nlets=False))
    dests, controls, at = env
    return Transaction(ori=ori, fields=_parse_data(after[at:], nlets=True), destinations=dests, control=controls)


def _parse_data(data: str, *, nlets: bool) -> tuple[tuple[str, str], ...]:
    """The data fields of a message: ``TAG/value`` separated by '.' and/or line breaks.

    Layout is not data (PROTOCOL.md §1): CR, LF and FF separate lines, DEL is ignored, HT reads
    as a space. A '.' may end a line (Nlets: "terminated by a period", then CR LF) or begin the
    next one; in the NCIC form the message does not end with '.' ("the final character of the
    message should not be a period"), while the Nlets data may (its hit-confirmation examples
    end so). A line that does not begin with ``TAG/`` continues the previous value (free text
    wrapped over lines); anything else is E108.
    """
    if "\x7f" in data:
        data = data.replace("\x7f", "")
    if "\t" in data:
        data = data.replace("\t", " ")
    lines = g.LINE_BREAK_RE.split(data) if ("\r" in data or "\n" in data or "\f" in data) else [data]
    last = len(lines) - 1
    fields: list[list[str]] = []
    for li, line in enumerate(lines):
        if not line.strip(" "):
            continue
        parts = line.split(".")
        final = len(parts) - 1
        for pi, part in enumerate(parts):
            if part[:1] == " " and "/" in part:
                part = part.lstrip(" ")  # "TXT NAM/…", ". DOB/…": spaces before a tag are layout
            if len(part) > 3 and part[3] == "/" and g.TAG_RE.match(part[:3]):
                if not part[4:].strip(" "):
                    raise _fail(Reject.E108, f"{part[:3]}/ HAS NO VALUE")
                fields.append([part[:3], part[4:]])
            elif not part and pi == final and pi > 0 and (li < last or nlets):
                continue  # a '.' that ends a line, or the Nlets data
            elif not part and pi == 0 and final > 0 and fields:
                continue  # the separator begins the next line
            elif pi == 0 and fields and part:
                fields[-1][1] += " " + part  # a continuation line
            elif not part:
                raise _fail(Reject.E108, "EMPTY FIELD")
            else:
                raise _fail(Reject.E108, "FIELD MUST BE TAG/VALUE")
    return tuple((t, v) for t, v in fields)


def _parse_admin(rest: str | None, rest_as_sent: str | None) -> AdminText:
    """``AM.ORI.DEST[,DEST…][.*CONTROL].TXT free text``; the free text is kept as sent."""
    if rest is None:
        raise _fail(Reject.E107)
    ori, sep, after = rest.partition(".")
    _parse_ori(ori)
    if not sep or not after:
        raise _fail(Reject.E108, "AM NEEDS ORI.DEST.TXT")
    first = after.split(".", 1)[0]
    for d in g.DEST_SEP.split(_routing(first)):
        if g.DESTINATION_RE.match(d) is None:
            raise _fail(Reject.E108, "AM DESTINATION MALFORMED")
    if "." not in after:
        raise _fail(Reject.E108, "AM NEEDS ORI.DEST.TXT")
    try:
        env = _envelope(after, g.DESTINATION_RE, am=True)
    except ProtocolError as exc:
        if exc.reject is Reject.E102:
            raise
        raise _fail(Reject.E108, "AM TEXT MUST START WITH TXT") from None
    assert env is not None
    dests, controls, at = env
    assert rest_as_sent is not None
    free = rest_as_sent[len(ori) + 1 + at :]
    if free[:1] in (" ", "/"):
        free = free[1:]
    if not free.strip(" " + g.TEXT_CONTROLS):
        raise _fail(Reject.E108, "AM TEXT MISSING")
    return AdminText(ori=ori, destinations=dests, text=free, control=controls)


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


# msc's notice as an output's text: HEADER "." "MSC." code [" " reason]. Any "E" and three digits
# (ASCII: str's \d would take any script's): an upstream's N passes its own code through (E1xx, E2xx
# as well as E3xx), and a code msc does not know yet is still msc's notice, not an answer.
# "MSC.PART i/n." is a part of an answer, never a notice. The one reader: the terminal and the web
# inbox ask parse_notice, never a pattern of their own.
_NOTICE = re.compile(r"[^.]*\.MSC\.(E[0-9]{3})(?: (.*))?", re.S)


def parse_notice(text: str) -> tuple[str, str] | None:
    """``(code, reason)`` when the output ``text`` (``HEADER.TEXT``) is msc's notice of a request's
    fate, ``HEADER.MSC.<code> <reason>`` (:func:`msc_notice`, PROTOCOL.md §4); else None (an answer,
    a part of one, unsolicited traffic)."""
    m = _NOTICE.fullmatch(text)
    return (m.group(1), m.group(2) or "") if m else None


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
    """Parse an ``M`` frame from an upstream (PROTOCOL.md §4).

    Only the destination header is strict (E103, E106 when there is no text): an answer is never
    refused for the bytes of its text (PROTOCOL.md §1). ``text`` holds every byte as received,
    one character per byte (:func:`wire_text`); :func:`output_bytes` gives what a client is sent.
    """
    s = wire_text(payload)
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


def format_upstream(dest: str, text: str | bytes) -> bytes:
    """What an upstream (or a stub) sends msc: ``DEST.TEXT``. A ``str`` text is written one byte
    per character (code points 0–255), so a simulator can send any byte."""
    raw = text if isinstance(text, bytes) else text.encode("latin-1", "replace")
    return dest.encode("ascii", "replace") + b"." + raw


def wire_text(payload: bytes) -> str:
    """Bytes received from an upstream as text, losslessly: one character per byte (ISO 8859-1
    code points), so ``wire_text(p).encode("latin-1") == p`` and the journal keeps the original."""
    return payload.decode("latin-1")


def _visible(m: re.Match[str]) -> str:
    ch = m.group()
    raw = ch.encode("latin-1") if ord(ch) < 0x100 else ch.encode("utf-8")
    return "".join(f"<{b:02X}>" for b in raw)


def output_bytes(text: str) -> bytes:
    """The bytes a client is sent for an output text (PROTOCOL.md §1, byte policy).

    Printable ASCII, HT, LF, FF, CR and DEL go unchanged; every other byte is written visibly as
    ``<HH>`` (two upper-case hex digits): ``"A\x1bB"`` → ``b"A<1B>B"``, ``"\xdc"`` → ``b"<DC>"``.
    The journal keeps the text as received; this is only the delivered copy.
    """
    if text.isascii() and g.NOT_TEXT_STR.search(text) is None:
        return text.encode("ascii")
    return g.NOT_TEXT_STR.sub(_visible, text).encode("ascii")
