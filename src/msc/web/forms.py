"""Forms for the common message keys, generated from the switch's message-key edit table
(:mod:`msc.protocol.edits`, CONFIG.md "Edits"), and the one check behind their inline messages.

:func:`form_specs` gives the page, per key the switch routes, the fields to show and the rules the
edit table holds for them (required tags, identifier sets, each tag's format and what it must
be, permitted purpose codes). :func:`check` is what the page calls as the operator types: the
text is parsed by the switch's own parser and evaluated by the same edit the switch applies, so
an inline message and the switch's ``E108`` come from one implementation. The switch checks
again when the message is sent (it is the authority; the page only spares a round trip).
"""

from __future__ import annotations

from msc.mnemonics.directory import Directory
from msc.protocol import edits
from msc.protocol.codes import ProtocolError
from msc.protocol.message import AdminText, Transaction, parse_input

#: What each tag is called on a form (NCIC 2000 / Nlets data element names).
LABELS: dict[str, str] = {
    "NAM": "Name (LAST, FIRST MIDDLE)", "DOB": "Date of birth (CCYYMMDD)", "SEX": "Sex", "RAC": "Race",
    "SOC": "Social security number", "OLN": "Operator's licence number", "OLS": "Licence state",
    "FBI": "FBI number", "SID": "State identification number", "MNU": "Miscellaneous number",
    "NIC": "NCIC number", "CII": "CII number", "LIC": "Licence plate", "LIS": "Plate state",
    "LIY": "Plate year", "LIT": "Plate type", "VIN": "Vehicle identification number", "VYR": "Vehicle year",
    "VMA": "Vehicle make", "OCA": "Case number (OCA)", "PUR": "Purpose code", "ATN": "Requester (attention)",
    "REL": "Secondary recipient", "RTY": "Request type", "RNO": "Request number", "PRI": "Priority (U urgent, R routine)",
    "REM": "Remarks", "ORI": "Originating agency (ORI)",
}

#: The keys that get a form, their titles and the fields shown (in order); ``nlets``: the form
#: offers Nlets destinations (state codes / ORIs) and then sends the Nlets form of PROTOCOL.md §2.
FORMS: tuple[dict, ...] = (
    {"mke": "QW", "title": "Wanted person", "tags": ("NAM", "DOB", "SEX", "RAC", "SOC", "OLN", "FBI", "SID", "MNU", "NIC")},
    {"mke": "QV", "title": "Vehicle", "tags": ("LIC", "LIS", "LIY", "VIN", "NIC")},
    {"mke": "DQ", "title": "Driver licence", "tags": ("OLN", "NAM", "DOB", "SEX"), "nlets": True},
    {"mke": "RQ", "title": "Registration", "tags": ("LIC", "LIS", "LIY", "LIT", "VIN"), "nlets": True},
    {"mke": "QH", "title": "Criminal history: name search", "tags": ("PUR", "ATN", "REL", "NAM", "DOB", "SEX", "RAC", "SOC", "FBI", "SID")},
    {"mke": "QR", "title": "Criminal history: record", "tags": ("PUR", "ATN", "REL", "FBI", "SID", "CII")},
    {"mke": "YQ", "title": "Hit confirmation request",
     "tags": ("PRI", "NIC", "OCA", "NAM", "LIC", "VIN", "RTY", "RNO", "REM"), "nlets": True},
    {"mke": "YR", "title": "Hit confirmation response", "tags": ("NIC", "OCA", "NAM", "LIC", "VIN", "RNO", "REM"), "nlets": True},
)
AM_FORM = {"mke": "AM", "title": "Administrative message", "tags": (), "am": True}
#: Single-choice values offered as a list (the formats' own sets).
CHOICES = {"SEX": ("M", "F", "U", "X"), "RAC": ("A", "B", "I", "P", "U", "W"), "PRI": ("U", "R")}


def form_specs(directory: Directory, prohibited: frozenset[str]) -> list[dict]:
    """The forms of the keys this switch routes (and AM), with their edits' rules."""
    out = []
    for form in FORMS:
        mke = form["mke"]
        if mke not in directory.routes:
            continue
        edit = directory.edits.get(mke) or edits.builtin(mke)
        tags = list(form["tags"])
        for t in (*edit.required, *(t for s in edit.one_of for t in s)):
            if t not in tags:
                tags.append(t)  # a rule the agency added names a tag the form must offer
        fields = []
        for t in tags:
            fmt = edits.FORMATS.get(edit.formats.get(t, ""))
            f = {"tag": t, "label": LABELS.get(t, t), "required": t in edit.required,
                 "format": fmt.name if fmt else None, "says": fmt.says if fmt else None}
            if t == edits.PURPOSE_TAG:
                f["choices"] = [c for c in edit.purpose_codes if c not in prohibited]
            elif t in CHOICES:
                f["choices"] = list(CHOICES[t])
            fields.append(f)
        out.append({"mke": mke, "title": form["title"], "nlets": bool(form.get("nlets")),
                    "required": list(edit.required), "one_of": [list(s) for s in edit.one_of],
                    "max_destinations": edit.max_destinations, "fields": fields})
    out.append({**AM_FORM, "tags": [], "nlets": True, "required": [], "one_of": [], "max_destinations": 5, "fields": []})
    return out


def check(directory: Directory, prohibited: frozenset[str], header: str, text: str) -> dict:
    """Every problem of ``text`` (``MKE.ORI…`` as the operator would send it after the header):
    ``{"ok": bool, "fields": {TAG: [problem…]}, "general": [problem…]}``. Problems are the
    switch's own words (its parser's reject and the key's edits)."""
    fields: dict[str, list[str]] = {}
    general: list[str] = []
    try:
        inp = parse_input(f"{header}.{text}".encode("ascii"))
    except UnicodeEncodeError:
        return {"ok": False, "fields": {}, "general": ["E102 ONLY PRINTABLE ASCII CHARACTERS MAY BE SENT"]}
    except ProtocolError as exc:
        return {"ok": False, "fields": {}, "general": [f"{exc.reject.code} {exc.detail or exc.reject.reason}"]}
    body = inp.body
    if isinstance(body, Transaction):
        if inp.mke not in directory.routes:
            general.append(f"E301 UNKNOWN MESSAGE KEY {inp.mke}")
        edit = directory.edits.get(inp.mke)
        problems = edits.evaluate(edit, body.fields, body.destinations, prohibited_purposes=prohibited) if edit else []
        pur = body.get(edits.PURPOSE_TAG)
        if pur is not None and pur.strip() in prohibited:
            problems.append(f"PUR/{pur.strip()} IS A PROHIBITED PURPOSE (E209, PPP §1.6.1 D)")
        for p in problems:
            tag = p[:3]
            if len(p) > 3 and p[3] == "/" and tag.isalpha():
                fields.setdefault(tag, []).append(p)
            else:
                general.append(p)
    elif not isinstance(body, AdminText):
        general.append(f"{inp.mke} IS NOT SENT FROM THE WEB CONSOLE (" + (
            "THE PASSWORD FORM, ALT+W, CHANGES A PASSWORD" if inp.mke == "PWD" else "ITS LOGON AND LOGOFF BUTTONS DO THAT")
            + ")")
    return {"ok": not fields and not general, "fields": fields, "general": general}
