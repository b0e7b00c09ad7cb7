"""The CLETS message grammar (PROTOCOL.md §2), written once as named regex pieces.

Every parser in :mod:`msc.protocol.message` is built from these; nothing else in msc spells a
pattern for a protocol element.
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

MKE = r"[A-Z0-9]{2,6}"

# NCIC Originating Agency Identifier: two-letter state code then seven characters.
ORI = r"[A-Z]{2}[A-Z0-9]{7}"

# NCIC-style field: a three-letter tag, '/', a value without '.'.
TAG = r"[A-Z]{3}"

# Pool and group names (CONFIG.md): a pool is "4–10 [A-Z0-9]"; groups may be shorter (APB).
POOL_NAME = HEADER
GROUP_NAME = r"[A-Z0-9]{2,10}"

# Upstream destinations (PROTOCOL.md §4): a mnemonic (+ ref), an ORI or a group name.
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
POOL_NAME_RE = _full(POOL_NAME)
GROUP_NAME_RE = _full(GROUP_NAME)
DESTINATION_RE = _full(DESTINATION)
OTP_RE = _full(OTP)
NCIC_NOTIFICATION_RE = re.compile(NCIC_NOTIFICATION)  # match() at the start of a message text
ORI_AT_START_RE = re.compile(rf"({ORI})(?=[. \r\n]|\Z)")

# Message text is printable ASCII (PROTOCOL.md §1); CR and LF only inside administrative free text.
NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
NOT_PRINTABLE_OR_NEWLINE = re.compile(rb"[^\x20-\x7e\r\n]")
