"""The message grammar (PROTOCOL.md §1–§4), written once as named pieces with their sources.

Every parser in :mod:`msc.protocol.message` is built from these; nothing else in msc spells a
pattern for a protocol element. The shapes, in wire order::

    input      = header "." [ oif "." ] [ taf "." ] text
    text       = mke [ "." body ]
    body       = ori [ "." ncic-data ]                                  ; NCIC form
               | ori "." dest-list *( "." control ) "." "TXT" data       ; Nlets form
    ncic-data  = field *( "." field )
    data       = fields separated by "." and/or line breaks (layout), see message._parse_data

Sources: CLETS PPP §1.6.2, §1.6.6–§1.6.8 (header, OIF, TAF); the NCIC message structure
(``MKE.ORI.TAG/value…``, "the final character of the message should not be a period"); the Nlets
User and Technical Guide, "Message Structure" and the legacy query formats of the driver licence
(DQ), registration (RQ), hit confirmation (YQ/YR) and administrative (AM) sections: "Message type.
Sending ORI followed by a period. Destination ORI followed by a period (up to five 2-character
state codes or regional codes) [or 9-character ORIs]. If needed, optional control field. TXT.
CR, LF, DEL (optional). Data elements preceded by a prefix and terminated by a period", and
"control characters are permitted throughout the text of the message and should be ignored".
"""

from __future__ import annotations

import re

# PPP §1.6.6 C: "the four-to-10 alphanumeric character supplemental header".
# PPP §1.6.2 A: "Each CLETS terminal shall have its own unique four-character mnemonic."
MNEMONIC = r"[A-Z0-9]{4}"
REF = r"[A-Z0-9]{1,6}"
HEADER = r"[A-Z0-9]{4,10}"

# PPP §1.6.7: "The OIF is located after the supplemental header, separated by a period,
# identified by an asterisk, composed of six alpha-numeric characters and terminated by a
# period."
USER_ID = r"[A-Z0-9]{6}"
OIF = r"\*" + USER_ID

# PPP §1.6.8: "The TAF is a six to 18-character variable length field following and separated
# from the OIF by a period, identified by a number sign and terminated by a period."
# IP and MAC addresses may appear (§1.6.8 B), hence ':' and '-'.
TAF_VALUE = r"[A-Z0-9:\-]{6,18}"
TAF = "#" + TAF_VALUE

# Message key (MKE): NCIC keys are 2–4 characters, Nlets message types "two to three" (Nlets
# Message Structure, "Message Identification"); msc accepts 2–6 for state-defined keys.
MKE = r"[A-Z0-9]{2,6}"

# Message keys that are themselves a response or one-way: the upstream's A is all that comes back,
# so msc forwards and journals them and waits for no answer (no MSC.E303, no E302 after a restart,
# nothing held by a drain). PROTOCOL.md §4 "Keys that await no answer"; a route may say otherwise
# (``one_way``, CONFIG.md). Sources: the Nlets User and Technical Guide — every inquiry key ``xQ``
# is answered by its response key ``xR``, which a state sends back to the inquirer and which is
# itself answered by nothing: YR hit confirmation response (Nlets Wiki §16: "the response to a YQ"),
# DR driver licence, RR registration, KR driver and registration, CR/IR/FR criminal history
# responses (Nlets Wiki §15, "Triple I responses"), BR boat/snowmobile registration, AR
# immigration status (LESC); and AM, the free-text administrative message (PPP §1.6.5).
ONE_WAY_KEYS = frozenset(("YR", "DR", "RR", "KR", "CR", "IR", "FR", "BR", "AR", "AM"))

# NCIC Originating Agency Identifier: two-letter state code then seven characters.
ORI = r"[A-Z]{2}[A-Z0-9]{7}"

# NCIC-style field: a three-letter tag (the NCIC/Nlets "prefix"), '/', a value without '.'.
TAG = r"[A-Z]{3}"
FIELD = rf"(?P<tag>{TAG})/(?P<value>[^.]*)"

# Nlets destinations: "up to five 2-character state codes or regional codes" or 9-character
# ORIs, separated by commas (Nlets Message Structure; the RAND section allows "commas and
# optional spaces"). 2-character codes include Nlets itself (NL) and the regions (A1 …).
STATE_CODE = r"[A-Z0-9]{2}"
NLETS_DEST = rf"(?:{ORI}|{STATE_CODE})"
DEST_LIST = rf"{NLETS_DEST}(?: ?, ?{NLETS_DEST})*"
DEST_SEP = re.compile(r" ?, ?")

# Nlets "optional control field": an asterisk and up to ten characters, echoed by the answering
# system so the sender can match the answer. No '.', ',' or control character inside.
CONTROL = r"\*[!-+\-/-~]{1,10}"

# The Nlets marker that ends the routing fields; the data fields follow it ("TXT" then,
# optionally, CR LF DEL). Never followed by '/' (that would be a field tagged TXT).
TXT_MARKER = "TXT"

# Pool and group names (CONFIG.md): a pool is "4–10 [A-Z0-9]"; groups may be shorter (APB).
POOL_NAME = HEADER
GROUP_NAME = r"[A-Z0-9]{2,10}"

# Destinations of AM and of upstream traffic (PROTOCOL.md §2, §4): a mnemonic (+ ref), an ORI,
# a 2-character Nlets state code or a group name.
DESTINATION = r"[A-Z0-9]{2,10}"

# NCIC unsolicited notifications do not begin with a message key but with "$." and a one-character
# notification type and "." — "$.L." locate, "$.H." hit (e.g. "$.H.TTP" threat to protectee),
# "$.8." out-of-state record, "$.K." missing information … (NCIC 2000 Operating Manual: Wanted
# Person File §2.8 "the $.8. program", Protective Interest File §1.9, National Sex Offender
# Registry File §1.9 "Unsolicited notifications"). The ORI of the record usually follows.
NCIC_NOTIFICATION = r"\$\.[A-Z0-9]\."

# One-time password: six digits, or '-' when the account has none (PROTOCOL.md §2 LOGON).
OTP = r"[0-9]{6}|-"


def _full(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?:{pattern})\Z")


HEADER_RE = _full(HEADER)
MNEMONIC_RE = _full(MNEMONIC)
USER_ID_RE = _full(USER_ID)
TAF_VALUE_RE = _full(TAF_VALUE)
MKE_RE = _full(MKE)
ORI_RE = _full(ORI)
TAG_RE = _full(TAG)
FIELD_RE = re.compile(rf"{TAG}/")
POOL_NAME_RE = _full(POOL_NAME)
GROUP_NAME_RE = _full(GROUP_NAME)
DESTINATION_RE = _full(DESTINATION)
DEST_LIST_RE = _full(DEST_LIST)
CONTROL_RE = _full(CONTROL)
OTP_RE = _full(OTP)
NCIC_NOTIFICATION_RE = re.compile(NCIC_NOTIFICATION)  # match() at the start of a message text


def typed_otp(typed: object) -> str | None:
    """What an operator typed for a ``LOGON``'s one-time password (the terminal's prompt, the web
    console's field), as the OTP field (§2: six digits, or ``-`` for an account without TOTP):
    ``None`` for no code (nothing typed, or ``-``); the six ASCII digits, without the spaces an
    authenticator app groups them by (``123 456``). ``ValueError`` for anything else, a
    non-string included — most often the password typed in the wrong place, which must be
    neither sent nor checked (CJIS IA-6). The callers say why in their own words."""
    if not isinstance(typed, str):
        raise ValueError("not a one-time password")
    code = "".join(typed.split())
    if code in ("", "-"):
        return None
    if OTP_RE.fullmatch(code) is None:
        raise ValueError("not a one-time password")
    return code
ORI_AT_START_RE = re.compile(rf"({ORI})(?=[. \r\n]|\Z)")

# --- the byte policy (PROTOCOL.md §1, "Characters") ------------------------------------------
#
# The same set of bytes is allowed in both directions:
#   0x20–0x7E  printable ASCII: data.
#   HT  0x09   data (whitespace inside a value: edits and the search index read it as a space).
#   LF  0x0A, CR 0x0D, FF 0x0C
#              layout: line and page breaks between or around fields. Edits and the search index
#              read the fields without them; the text is forwarded and delivered as sent.
#   DEL 0x7F   layout: the teletype "rubout"/fill character that Nlets formats put after CR LF
#              ("TXT CR,LF,DEL (optional)"); ignored wherever it appears in the text.
# Every other byte (the other C0 controls, bytes >= 0x80):
#   from a client: E102, nothing forwarded;
#   from an upstream: journaled exactly as received, delivered with the byte written as
#   ``<HH>`` (two upper-case hex digits) — see message.output_bytes.
# Routing fields (header, OIF, TAF, key, ORI, destinations, control field) allow only their own
# grammar above: any control byte inside them is E102 (client) or E103 (upstream header).
TEXT_CONTROLS = "\t\n\f\r\x7f"
LAYOUT = "\n\f\r\x7f"  # removed before fields are read
LINE_BREAK_RE = re.compile(r"[\n\f\r]+")
NOT_TEXT = re.compile(rb"[^\x20-\x7e\t\n\f\r\x7f]")
NOT_TEXT_STR = re.compile(r"[^\x20-\x7e\t\n\f\r\x7f]")
HAS_CONTROL = re.compile(r"[\t\n\f\r\x7f]")

# Message text is printable ASCII (PROTOCOL.md §1) where no control byte may appear.
NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
