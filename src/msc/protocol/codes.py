"""The reject-code table (PROTOCOL.md §6), defined once.

Code, tests and documentation import these objects; nothing else spells a code string.
"""

from __future__ import annotations

from enum import Enum


class Reject(Enum):
    """A reject code and its fixed reason text.

    ``Reject.E204.code == "E204"``; ``Reject.E204.reason`` is the default text sent in an
    ``N`` frame or an ``MSC.<code>`` output when no more specific detail is given.
    """

    E101 = "FRAMING ERROR"
    E102 = "INVALID CHARACTERS IN MESSAGE"
    E103 = "HEADER MALFORMED"
    E104 = "OIF MALFORMED, MISSING OR NOT MATCHING THE SESSION"
    E105 = "TAF MALFORMED, MISSING OR NOT MATCHING THE SESSION"
    E106 = "MESSAGE KEY MISSING OR MALFORMED"
    E107 = "ORI MISSING OR MALFORMED"
    E108 = "FIELD MALFORMED OR REQUIRED FIELD MISSING"
    E201 = "NOT LOGGED ON"
    E202 = "LOGON REFUSED"
    E203 = "ACCOUNT LOCKED OR DISABLED"
    E204 = "MNEMONIC NOT AUTHORIZED FOR THIS CATEGORY"
    E205 = "USER ROLE NOT AUTHORIZED FOR THIS CATEGORY"
    E206 = "ORI OR AGENCY NOT AUTHORIZED ON THIS STATION"
    E207 = "OPERATOR CERTIFICATION EXPIRED"
    E208 = "SELF-INQUIRY PROHIBITED"
    E209 = "PURPOSE CODE NOT PERMITTED"
    E210 = "HEADER MNEMONIC DOES NOT BELONG TO THIS CONNECTION"
    E301 = "UNKNOWN MESSAGE KEY"
    E302 = "UPSTREAM UNAVAILABLE"
    E303 = "UPSTREAM TIMEOUT"
    E304 = "DESTINATION UNKNOWN"
    E305 = "MNEMONIC POOL EXHAUSTED"
    E306 = "NO DEFINED DESTINATION FOR POOLED MNEMONIC"
    E307 = "RATE OR QUEUE LIMIT REACHED, TRY AGAIN"
    E501 = "JOURNAL UNAVAILABLE, NOTHING WAS FORWARDED"
    E502 = "INTERNAL ERROR"
    E503 = "STORAGE UNAVAILABLE, TRY AGAIN"

    @property
    def code(self) -> str:
        return self.name

    @property
    def reason(self) -> str:
        return self.value

    @classmethod
    def lookup(cls, code: str) -> Reject | None:
        """The member for a code string such as ``"E204"``, or None if it is not in §6."""
        return cls.__members__.get(code)


ALL_CODES: frozenset[str] = frozenset(Reject.__members__)


class MscError(Exception):
    """Base of every error msc raises on purpose."""


class ProtocolError(MscError):
    """Malformed or refused input, carrying the §6 reject code to answer with."""

    def __init__(self, reject: Reject, detail: str | None = None) -> None:
        self.reject = reject
        self.detail = detail or reject.reason
        super().__init__(f"{reject.code} {self.detail}")

    @property
    def code(self) -> str:
        return self.reject.code


class FramingError(ProtocolError):
    """A link-level error (E101): the connection is closed after the ``N`` is sent."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reject.E101, detail)
