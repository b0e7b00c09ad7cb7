"""The authorization matrix: may this operator, on this station, send this message?

:func:`decide` is a pure function of the directory entries and the parsed message, applied to
every message after logon. The first failing rule gives the reject code (PROTOCOL.md §6):

=====  =================================================================================
E204   the station (or pool) is not authorized for the route's category, or for ``entry``
       when the key enters/changes records
E205   the user's role may not operate a terminal, or an ``ltfa`` user sends an entry
E206   the message's ORI, or the user's agency, is not one the station serves
E207   the operator's certification has expired (PPP §1.8.2 A 2, biennial)
E108   the message-key edits (``msc.protocol.edits``): every problem in one reject — missing
       identifiers, field formats, repeated tags, purpose codes not permitted; and, whatever
       the edit table says, a ``cori`` message without ``PUR/`` or ``ATN/`` (PPP §1.7.1 A)
E209   the purpose code is prohibited (PPP §1.6.1 D: licensing, certification, employment)
E208   the operator inquires into their own record — ``NAM`` and ``DOB`` match (PPP §1.6.4 B)
=====  =================================================================================
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from msc.mnemonics.directory import Route, User
from msc.protocol.codes import Reject
from msc.protocol.edits import KeyEdit, evaluate, reject_detail
from msc.protocol.message import PURPOSE_TAG, REQUESTER_TAG, AdminText, Transaction

OPERATOR_ROLES = frozenset(("full", "ltfa"))  # CONFIG.md roles table: who may log on to a terminal
CORI = "cori"
ADMIN = "admin"
ENTRY = "entry"


@dataclass(frozen=True)
class Denied:
    reject: Reject
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.detail:
            object.__setattr__(self, "detail", self.reject.reason)

    @property
    def code(self) -> str:
        return self.reject.code


def _norm_name(s: str) -> str:
    return re.sub(r"\s*,\s*", ",", re.sub(r"\s+", " ", s.strip().upper()))


def parse_dob(value: str) -> dt.date | None:
    """NCIC dates are CCYYMMDD; also accept CCYY-MM-DD and MMDDCCYY."""
    v = value.strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d", "%m%d%Y", "%m/%d/%Y"):
        try:
            return dt.datetime.strptime(v, fmt).date()
        except ValueError:
            continue
    return None


def is_self_inquiry(user: User, body: Transaction) -> bool:
    """PPP §1.6.4 B: "Authorized personnel shall not inquire into their own record"."""
    if user.dob is None:
        return False
    nam = body.get("NAM")
    dob = body.get("DOB")
    if not nam or not dob:
        return False
    return _norm_name(nam) == _norm_name(user.name) and parse_dob(dob) == user.dob


def check_operator(user: User, serves: frozenset[str], today: dt.date) -> Denied | None:
    """Checks that hold for every message of an operator, and at logon."""
    if user.role not in OPERATOR_ROLES:
        return Denied(Reject.E205, f"ROLE {user.role.upper()} MAY NOT OPERATE A TERMINAL")
    if user.ori not in serves:
        return Denied(Reject.E206, "USER'S AGENCY IS NOT SERVED BY THIS STATION")
    if user.certified_until is not None and user.certified_until < today:
        return Denied(Reject.E207)
    return None


#: What a logon refused by :func:`check_operator` journals (``LOGON FAILED …``); never shown.
_REFUSAL_REASONS = {Reject.E205: "ROLE NOT ALLOWED", Reject.E206: "AGENCY NOT SERVED",
                    Reject.E207: "CERTIFICATION EXPIRED"}


def refusal_reason(denied: Denied) -> str:
    """The journaled reason of a logon or OIF refused by :func:`check_operator` (``ROLE NOT
    ALLOWED`` as the ``msc`` command journals it, ``AGENCY NOT SERVED``, ``CERTIFICATION
    EXPIRED``). Shown to nobody: the operator gets ``E202``, a host ``E104``."""
    return _REFUSAL_REASONS.get(denied.reject, denied.code)


def decide(
    *,
    user: User,
    authorizations: frozenset[str],
    serves: frozenset[str],
    route: Route | None,
    body: Transaction | AdminText,
    prohibited_purposes: frozenset[str],
    today: dt.date,
    edit: KeyEdit | None = None,
) -> Denied | None:
    """Apply the matrix to one message. ``route`` is None for ``AM`` (category ``admin``);
    ``edit`` is the key's message-key edit (None: no edits, as for ``AM``)."""
    category = route.category if route is not None else ADMIN
    if category not in authorizations:
        return Denied(Reject.E204, f"MNEMONIC NOT AUTHORIZED FOR {category.upper()}")
    entry = route is not None and route.entry
    if entry and ENTRY not in authorizations:
        return Denied(Reject.E204, "MNEMONIC NOT AUTHORIZED FOR ENTRY")
    denied = check_operator(user, serves, today)
    if denied is not None:
        return denied
    if entry and user.role == "ltfa":
        return Denied(Reject.E205, "LESS THAN FULL ACCESS OPERATORS MAY NOT ENTER RECORDS")
    if body.ori not in serves:
        return Denied(Reject.E206, f"ORI {body.ori} NOT AUTHORIZED ON THIS STATION")
    if isinstance(body, Transaction):
        if edit is not None:
            problems = evaluate(edit, body.fields, body.destinations, prohibited_purposes=prohibited_purposes)
            if problems:
                return Denied(Reject.E108, reject_detail(problems))
        if category == CORI:
            purpose = body.get(PURPOSE_TAG)
            if not purpose:
                return Denied(Reject.E108, "PUR/ REQUIRED ON CRIMINAL HISTORY")
            if not body.get(REQUESTER_TAG):
                return Denied(Reject.E108, "ATN/ REQUIRED ON CRIMINAL HISTORY")
            if purpose.strip().upper() in prohibited_purposes:
                return Denied(Reject.E209, f"PURPOSE {purpose} NOT PERMITTED")
        if is_self_inquiry(user, body):
            return Denied(Reject.E208)
    return None
