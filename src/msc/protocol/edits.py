"""Message-key edits: refuse what the upstream cannot answer, before it leaves (CONFIG.md "Edits").

Commercial switches call these *message-key edits*: per key, which identifiers a message must
carry, the format of each field, which tags may repeat, and which purpose codes are allowed.
:func:`evaluate` is pure: a :class:`KeyEdit` and a parsed :class:`~msc.protocol.message.Transaction`
in, the list of *every* problem out (empty when the message passes), each a short upper-case
phrase for the one ``E108`` reject (:func:`reject_detail`).

Sources: field formats from the NCIC 2000 data dictionary as the NCIC and Nlets manuals use it
(NAM "LAST, FIRST MIDDLE SUFFIX", at most 30 characters; DOB CCYYMMDD; SEX M/F/U; RAC
A/B/I/P/U/W; LIC at most 10; VIN at most 20, a 17-character VIN without I, O or Q per
ISO 3779; OLN at most 20; SOC nine digits as the SSA assigns them; NIC one letter and nine
digits; MNU a two-letter prefix, '-', the number); identifier sets from the NCIC inquiry rules
(a person by name with DOB or with sex and race, or by a numeric identifier; a vehicle by LIC,
VIN or NIC) and the Nlets DQ/RQ/YQ query formats; purpose codes from the FBI III purpose-code
table (NIEM jxdm ``RapSheetPurposeCodeSimpleType``): A, C, D, F, H, I, J, S, V, X — R is used
only by the FBI and refused when a state or local agency sends it; CORI messages carry ``PUR/``
and ``ATN/`` (PPP §1.7.1 A).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from msc.protocol import grammar as g

# --- field formats --------------------------------------------------------------------------


def _re(pattern: str) -> Callable[[str], bool]:
    rx = re.compile(rf"(?:{pattern})\Z")
    return lambda v: rx.match(v) is not None


def _date(v: str) -> bool:
    if len(v) != 8 or not v.isdigit():
        return False
    try:
        d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:]))
    except ValueError:
        return False
    return d.year >= 1800


_VIN_RE = re.compile(r"[A-Z0-9]{1,20}\Z")


def _vin(v: str) -> bool:
    return _VIN_RE.match(v) is not None and (len(v) != 17 or not set(v) & set("IOQ"))


def _ssn(v: str) -> bool:
    if len(v) != 9 or not v.isdigit():
        return False
    area, group, serial = v[:3], v[3:5], v[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


class Format(msgspec.Struct, frozen=True):
    """A named field format: what ``E108`` says a value must be, and the check."""

    name: str
    says: str
    check: Callable[[str], bool]


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("date", "A DATE CCYYMMDD", _date),
    Format("sex", "M, F, U OR X", _re("[MFUX]")),
    Format("race", "A, B, I, P, U OR W", _re("[ABIPUW]")),
    Format("name", "LAST, FIRST MIDDLE (LETTERS FIRST; A-Z 0-9 SPACE , - '; AT MOST 30)",
           _re(r"[A-Z][A-Z0-9 ,'\-]{0,29}")),
    Format("plate", "1-10 LETTERS/DIGITS", _re("[A-Z0-9]{1,10}")),
    Format("state", "A 2-LETTER STATE CODE", _re("[A-Z]{2}")),
    Format("year", "A YEAR CCYY", _re("(?:18|19|20)[0-9]{2}")),
    Format("plate_year", "A YEAR CCYY OR NX", _re("(?:18|19|20)[0-9]{2}|NX")),
    Format("vin", "1-20 LETTERS/DIGITS (17: NO I, O, Q)", _vin),
    Format("oln", "1-20 LETTERS/DIGITS", _re("[A-Z0-9]{1,20}")),
    Format("ssn", "9 DIGITS AS ISSUED", _ssn),
    Format("fbi", "1-9 LETTERS/DIGITS", _re("[A-Z0-9]{1,9}")),
    Format("sid", "STATE CODE + 1-8 LETTERS/DIGITS", _re("[A-Z]{2}[A-Z0-9]{1,8}")),
    Format("mnu", "2-LETTER PREFIX, '-', 1-12 LETTERS/DIGITS", _re("[A-Z]{2}-[A-Z0-9]{1,12}")),
    Format("nic", "1 LETTER + 9 DIGITS", _re("[A-Z][0-9]{9}")),
    Format("ori", "AN ORI (2 LETTERS + 7 LETTERS/DIGITS)", _re(g.ORI)),
    Format("purpose", "ONE LETTER", _re("[A-Z]")),
    Format("priority", "U OR R", _re("[UR]")),
    Format("alnum", "LETTERS/DIGITS", _re("[A-Z0-9]+")),
    Format("digits", "DIGITS", _re("[0-9]+")),
    Format("text", "NOT BLANK", lambda v: bool(v.strip())),
)}

#: The format of each NCIC/Nlets tag wherever it appears (``[edits.formats]`` adds or overrides).
DEFAULT_FORMATS: dict[str, str] = {
    "NAM": "name", "DOB": "date", "SEX": "sex", "RAC": "race",
    "LIC": "plate", "LIS": "state", "LIY": "plate_year", "VIN": "vin", "VYR": "year",
    "OLN": "oln", "OLS": "state", "SOC": "ssn", "FBI": "fbi", "SID": "sid", "MNU": "mnu",
    "NIC": "nic", "PUR": "purpose", "PRI": "priority", "DOW": "date",
}

#: The FBI III purpose codes a state or local agency may send (R is the FBI's own).
III_PURPOSE_CODES: tuple[str, ...] = ("A", "C", "D", "F", "H", "I", "J", "S", "V", "X")

#: Tags that may appear more than once unless an edit says otherwise (aliases, scars/marks,
#: remarks and miscellaneous text).
DEFAULT_REPEATABLE: tuple[str, ...] = ("AKA", "SMT", "MIS", "REM")

#: The Nlets limit on destinations of one message ("up to five").
NLETS_MAX_DESTINATIONS = 5

PURPOSE_TAG = "PUR"


class KeyEdit(msgspec.Struct, frozen=True, kw_only=True):
    """The edits of one message key, ready to evaluate.

    ``required``: every tag must be present. ``one_of``: at least one of these tag sets must be
    complete (empty: no identifier rule). ``repeatable``: tags that may occur more than once
    (every other tag at most once). ``purpose_codes``: the codes ``PUR/`` may carry, when it is
    present. ``formats``: tag → format name (:data:`FORMATS`). ``max_destinations``: the most
    Nlets destinations one message may name.
    """

    mke: str = ""
    required: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    repeatable: tuple[str, ...] = DEFAULT_REPEATABLE
    purpose_codes: tuple[str, ...] = III_PURPOSE_CODES
    formats: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_FORMATS))
    max_destinations: int = NLETS_MAX_DESTINATIONS


# --- the built-in table ---------------------------------------------------------------------

_PERSON = (("NAM", "DOB"), ("NAM", "SEX", "RAC"), ("FBI",), ("SID",), ("SOC",), ("OLN",), ("MNU",), ("NIC",))
_VEHICLE = (("LIC",), ("VIN",), ("NIC",))
_RECORD = (("NIC",), ("NAM", "OCA"), ("OCA",))  # a record to confirm, modify, cancel or clear
_HIT = (("NIC",), ("OCA",), ("NAM",), ("LIC",), ("VIN",))
_CORI = ("PUR", "ATN")

#: What msc applies to a routed key that has no ``[[edit]]`` of its own (CONFIG.md "Edits").
#: Each rule lists the identifier sets of the NCIC/Nlets inquiry (see the module docstring).
BUILTIN: dict[str, dict[str, Any]] = {
    "QW": {"one_of": _PERSON},                               # NCIC wanted person
    "QV": {"one_of": _VEHICLE},                              # NCIC vehicle
    "QH": {"required": _CORI, "one_of": _PERSON},            # III name search
    "QR": {"required": _CORI, "one_of": (("FBI",), ("SID",), ("CII",))},  # III record request
    "IQ": {"required": _CORI, "one_of": _PERSON},            # Nlets CHRI index inquiry
    "FQ": {"required": _CORI, "one_of": (("FBI",), ("SID",))},  # Nlets full record
    "AQ": {"required": _CORI, "one_of": _PERSON},            # Nlets CHRI inquiry
    "DQ": {"one_of": (("OLN",), ("NAM", "DOB"))},            # driver licence (Nlets: OLN or NAM/DOB/SEX)
    "DNQ": {"one_of": (("NAM",),)},                          # Nlets driver licence by name
    "KQ": {"one_of": (("OLN",), ("NAM", "DOB"), ("LIC",), ("VIN",))},
    "RQ": {"one_of": (("LIC",), ("VIN",))},                  # registration (Nlets: LIC/LIY/LIT or VIN)
    "RNQ": {"one_of": (("NAM",),)},
    "EW": {"required": ("NAM", "SEX", "RAC", "OCA"),         # enter wanted person
           "one_of": (("DOB",), ("SOC",), ("FBI",), ("OLN",), ("MNU",), ("SID",))},
    "MW": {"one_of": _RECORD}, "XW": {"one_of": _RECORD}, "CW": {"one_of": _RECORD},
    "YQ": {"one_of": _HIT},                                  # hit confirmation request
    "YR": {"one_of": _HIT},                                  # hit confirmation response
}


def builtin(mke: str, *, purpose_codes: tuple[str, ...] = III_PURPOSE_CODES,
            formats: dict[str, str] | None = None) -> KeyEdit:
    """The built-in edit of ``mke`` (format, repeat and purpose checks only for keys msc does not
    know: they never refuse well-formed traffic)."""
    rule = BUILTIN.get(mke, {})
    return KeyEdit(mke=mke, required=rule.get("required", ()), one_of=rule.get("one_of", ()),
                   purpose_codes=purpose_codes, formats={**DEFAULT_FORMATS, **(formats or {})})


class EditTable(Protocol):
    """An ``[[edit]]`` table as the configuration holds it (``msc.config.model.EditSection``;
    the protocol imports no config, so this names only what it reads)."""

    @property
    def mke(self) -> tuple[str, ...]: ...
    @property
    def required(self) -> tuple[str, ...]: ...
    @property
    def one_of(self) -> tuple[tuple[str, ...], ...]: ...
    @property
    def repeatable(self) -> tuple[str, ...] | None: ...
    @property
    def purpose_codes(self) -> tuple[str, ...] | None: ...
    @property
    def formats(self) -> dict[str, str]: ...
    @property
    def max_destinations(self) -> int: ...


def from_section(section: EditTable, mke: str, *, purpose_codes: tuple[str, ...], formats: dict[str, str]) -> KeyEdit:
    """The :class:`KeyEdit` of ``mke`` from a configured ``[[edit]]`` table (duck-typed: the
    config model is not imported here). Unset fields take the ``[edits]`` defaults."""
    return KeyEdit(
        mke=mke, required=tuple(section.required), one_of=tuple(tuple(s) for s in section.one_of),
        repeatable=DEFAULT_REPEATABLE if section.repeatable is None else tuple(section.repeatable),
        purpose_codes=purpose_codes if section.purpose_codes is None else tuple(section.purpose_codes),
        formats={**DEFAULT_FORMATS, **formats, **section.formats}, max_destinations=section.max_destinations)


def table(routed: list[str], sections: Iterable[EditTable], *, use_builtin: bool, purpose_codes: tuple[str, ...],
          formats: dict[str, str]) -> dict[str, KeyEdit]:
    """The edit of every routed key: its ``[[edit]]``, else the built-in rule (when
    ``use_builtin``), else format, repeat and purpose checks only (CONFIG.md "Edits")."""
    out: dict[str, KeyEdit] = {}
    for mke in routed:
        if use_builtin:
            out[mke] = builtin(mke, purpose_codes=purpose_codes, formats=formats)
        else:
            out[mke] = KeyEdit(mke=mke, purpose_codes=purpose_codes, formats={**DEFAULT_FORMATS, **formats})
    for section in sections:
        for mke in section.mke:
            out[mke] = from_section(section, mke, purpose_codes=purpose_codes, formats=formats)
    return out


# --- evaluation -----------------------------------------------------------------------------

#: The longest value echoed in a problem, and the longest reject detail (PROTOCOL.md §1 frames).
MAX_ECHO = 20
MAX_DETAIL = 1000


def _echo(value: str) -> str:
    v = value.strip()
    return v if len(v) <= MAX_ECHO else v[: MAX_ECHO - 3] + "..."


def _alternatives(sets: tuple[tuple[str, ...], ...]) -> str:
    return " OR ".join("+".join(f"{t}/" for t in s) for s in sets)


def evaluate(edit: KeyEdit, fields: tuple[tuple[str, str], ...], destinations: tuple[str, ...] = (),
             *, prohibited_purposes: frozenset[str] = frozenset()) -> list[str]:
    """Every problem of one message under ``edit``, in a stable order (empty: it passes).

    ``fields`` are the parsed data fields (layout already removed, PROTOCOL.md §1); values are
    checked with surrounding spaces stripped. A purpose code in ``prohibited_purposes`` is not
    an edit problem: the authorization answers it ``E209`` (PPP §1.6.1 D).
    """
    problems: list[str] = []
    if len(destinations) > edit.max_destinations:
        problems.append(f"{len(destinations)} DESTINATIONS, AT MOST {edit.max_destinations}")
    counts = Counter(t for t, _ in fields)
    for tag in edit.required:
        if not counts[tag]:
            problems.append(f"{tag}/ REQUIRED")
    if edit.one_of and not any(all(counts[t] for t in s) for s in edit.one_of):
        problems.append(f"IDENTIFIERS MISSING: NEEDS {_alternatives(edit.one_of)}")
    for tag, n in counts.items():
        if n > 1 and tag not in edit.repeatable:
            problems.append(f"{tag}/ REPEATED {n} TIMES")
    for tag, value in fields:
        v = value.strip()
        fmt = FORMATS.get(edit.formats.get(tag, ""))
        if fmt is not None and not fmt.check(v):
            problems.append(f"{tag}/{_echo(v)} IS NOT {fmt.says}")
        elif tag == PURPOSE_TAG and v not in edit.purpose_codes and v not in prohibited_purposes:
            # The codes listed are those an operator may use here: a prohibited one (SECURITY.md,
            # PPP §1.6.1 D) is not offered, as the web console's form does not offer it.
            permitted = " ".join(c for c in edit.purpose_codes if c not in prohibited_purposes)
            problems.append(f"PUR/{_echo(v)} IS NOT A PERMITTED PURPOSE CODE ({permitted})")
    return problems


def reject_detail(problems: list[str]) -> str:
    """The ``E108`` reason naming every problem, "; "-separated and at most :data:`MAX_DETAIL`
    characters; if they do not all fit, the last words say how many more there are."""
    out: list[str] = []
    used = 0
    tail = len(f"; AND {len(problems)} MORE")
    for i, p in enumerate(problems):
        last = i == len(problems) - 1
        if used + (2 if out else 0) + len(p) + (0 if last else tail) > MAX_DETAIL:
            out.append(f"AND {len(problems) - i} MORE")
            break
        used += (2 if out else 0) + len(p)
        out.append(p)
    return "; ".join(out)


# --- checking a configured edit (``msc config check``) ---------------------------------------


def check(edit: KeyEdit, *, prohibited_purposes: frozenset[str] = frozenset(), cori: bool = False) -> list[tuple[str, str]]:
    """Impossible or unknown rules in one edit: a list of (field name, message).

    Unknown tags (not 3 letters) and format names, empty identifier sets, a required tag that
    no purpose code can satisfy, a criminal-history key that does not require ``PUR/`` and
    ``ATN/`` (PPP §1.7.1 A), fewer than one destination.
    """
    out: list[tuple[str, str]] = []
    for name in ("required", "repeatable"):
        for k, tag in enumerate(getattr(edit, name)):
            if g.TAG_RE.match(tag) is None:
                out.append((f"{name}[{k}]", f"{tag!r} is not a tag (3 letters A-Z)"))
    for k, s in enumerate(edit.one_of):
        if not s:
            out.append((f"one_of[{k}]", "an identifier set needs at least one tag"))
        for j, tag in enumerate(s):
            if g.TAG_RE.match(tag) is None:
                out.append((f"one_of[{k}][{j}]", f"{tag!r} is not a tag (3 letters A-Z)"))
    for tag, fmt in edit.formats.items():
        if g.TAG_RE.match(tag) is None:
            out.append((f"formats.{tag}", f"{tag!r} is not a tag (3 letters A-Z)"))
        if fmt not in FORMATS:
            out.append((f"formats.{tag}", f"unknown format {fmt!r} (known: {', '.join(sorted(FORMATS))})"))
    for k, code in enumerate(edit.purpose_codes):
        if re.fullmatch("[A-Z]", code) is None:
            out.append((f"purpose_codes[{k}]", f"{code!r} is not a purpose code (one letter)"))
    if PURPOSE_TAG in edit.required:
        usable = [c for c in edit.purpose_codes if c not in prohibited_purposes]
        if not usable:
            out.append(("purpose_codes", "PUR/ is required but every permitted purpose code is prohibited "
                                         "(switch.prohibited_purposes) or none is listed: nothing could pass"))
    if cori:
        for tag in ("PUR", "ATN"):
            if tag not in edit.required:
                out.append(("required", f"a criminal-history key must require {tag} (PPP §1.7.1 A)"))
    if edit.max_destinations < 1:
        out.append(("max_destinations", "must be >= 1"))
    return out
