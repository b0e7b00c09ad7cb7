"""The investigator's search form, checked field by field (pure): each bad value is refused with
words that name the field and say what it wants — the wording of ``msc journal search``'s options
(``msc.cli.options``, which the web console may not import) — never an exception's text.

:func:`search_query` turns the form's JSON (``case``, ``from``, ``to``, the filters of
``msc journal search``, ``tokens``, ``limit``) into ``(case, Query)`` or raises
:class:`FilterError` naming the first bad field (the page puts the focus there).
"""

from __future__ import annotations

import re

from msc.actions import investigate
from msc.journal.records import KINDS
from msc.journal.search import Query, parse_time
from msc.journal.tokens import TOKEN_TAGS, parse_query
from msc.protocol import grammar

OS_ACTOR_RE = re.compile(r"OS:[A-Za-z0-9._-]{1,32}")
TXN_RE = re.compile(r"[!-~]{1,64}")
CODE_RE = re.compile(r"[A-Z0-9]{1,12}")
MAX_LIMIT = 1_000_000
TIME_SHAPE = "use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (UTC unless an offset such as +02:00 is given)"


class FilterError(ValueError):
    """A search field the journal cannot be searched with: ``field`` (the form's name), ``message``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _time(field: str, label: str, value: str) -> int:
    try:
        return parse_time(value)
    except (ValueError, OverflowError):
        raise FilterError(field, f"{label}: {value!r} is not a time: {TIME_SHAPE}") from None


def _check(field: str, value: str) -> str:
    v = value.strip().upper()
    ok = {
        "mnemonic": lambda: grammar.DESTINATION_RE.fullmatch(v) is not None,
        "user": lambda: grammar.USER_ID_RE.fullmatch(v) is not None or OS_ACTOR_RE.fullmatch("OS:" + value.strip()[3:])
        is not None and v.startswith("OS:"),
        "ori": lambda: grammar.ORI_RE.fullmatch(v) is not None,
        "mke": lambda: grammar.MKE_RE.fullmatch(v) is not None or re.fullmatch(grammar.NCIC_NOTIFICATION, v) is not None,
        "kind": lambda: v in KINDS,
        "taf": lambda: grammar.TAF_VALUE_RE.fullmatch(v) is not None,
        "txn": lambda: TXN_RE.fullmatch(value.strip()) is not None,
        "code": lambda: CODE_RE.fullmatch(v) is not None,
    }[field]
    if ok():
        if field == "user" and v.startswith("OS:"):
            return "OS:" + value.strip()[3:]
        return value.strip() if field == "txn" else v
    says = {
        "mnemonic": "is not a mnemonic or pool name: 2-10 characters A-Z 0-9 (PPP §1.6.2)",
        "user": "is not a user ID (6 characters A-Z 0-9) or OS:<account> (a bootstrap)",
        "ori": "is not an ORI: 2 letters then 7 characters A-Z 0-9",
        "mke": "is not a message key: 2-6 characters A-Z 0-9, or an NCIC notification such as $.L.",
        "kind": f"is not a record kind: one of {', '.join(sorted(KINDS))}",
        "taf": "is not a TAF: 6-18 characters A-Z 0-9 : - (PPP §1.6.8)",
        "txn": "is not a transaction ID: 1-64 printable characters, no space",
        "code": "is not a code: 1-12 letters and digits (E201, SUMMARY)",
    }[field]
    label = {"mke": "Message key", "ori": "ORI", "taf": "TAF", "txn": "Transaction"}.get(field, field.capitalize())
    raise FilterError(field, f"{label}: {value.strip()!r} {says}")


def search_query(body: dict) -> tuple[str, Query]:
    """``(case, Query)`` from the search form; raises :class:`FilterError` for the first bad field
    (in the form's order)."""
    case = str(body.get("case", ""))
    if not investigate.valid_case(case):
        raise FilterError("case", investigate.CASE_RULE)
    start = _time("from", "From", str(body["from"]).strip()) if str(body.get("from") or "").strip() else None
    end = _time("to", "To", str(body["to"]).strip()) if str(body.get("to") or "").strip() else None
    if start is not None and end is not None and start >= end:
        raise FilterError("to", "To: must be later than From (From is inclusive, To exclusive)")
    filters = {}
    for f in investigate.FILTERS:
        raw = str(body.get(f) or "")
        filters[f] = _check(f, raw) if raw.strip() else None
    tokens = body.get("tokens") or []
    if isinstance(tokens, str):
        tokens = tokens.splitlines()
    if not isinstance(tokens, list):
        raise FilterError("tokens", "Field values: one TAG:VALUE a line")
    parsed = []
    for t in (str(t).strip() for t in tokens):
        if not t:
            continue
        try:
            parsed.append(parse_query(t))
        except ValueError:
            raise FilterError("tokens", f"Field values: {t!r} is not TAG:VALUE with TAG one of "
                                        f"{', '.join(TOKEN_TAGS)}") from None
    limit_text = str(body.get("limit") or "").strip()
    limit = None
    if limit_text:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise FilterError("limit", f"Limit: {limit_text!r} is not a whole number from 1 to {MAX_LIMIT:,}")
        limit = int(limit_text)
    return case, Query(start=start, end=end, tokens=parsed, limit=limit, **filters)
