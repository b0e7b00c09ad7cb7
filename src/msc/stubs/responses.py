"""Deterministic, plausible NCIC/CLETS/DMV-style answers for the upstream simulators.

Whether an inquiry is a *hit* depends only on the seed and the inquiry's identifying fields,
so the same question gets the same answer in every run with the same ``--seed``:
``HIT_PERCENT`` of person/vehicle inquiries (10 %) hit, the rest answer ``NO RECORD``.
DMV inquiries return a record 90 % of the time. Response text is NCIC style:
``MKE.ORI.RESULT.TAG/value…`` with '.' between fields, CR LF between lines of a record.
"""

from __future__ import annotations

import hashlib

from msc.protocol.grammar import ONE_WAY_KEYS
from msc.protocol.message import Input, Transaction

HIT_PERCENT = 10
DMV_RECORD_PERCENT = 90

ROLE_KEYS = {
    "clets": None,  # the state host answers everything it routes
    "ncic": frozenset(("QW", "QV", "QH", "QR", "EW", "MW", "XW", "CW", "YQ", "YR")),
    "nlets": frozenset(("QH", "QR", "YQ", "YR", "QW", "QV")),
    "dmv": frozenset(("DQ", "RQ", "KQ")),
}
ENTRY_KEYS = frozenset(("EW", "MW", "XW", "CW"))
INQUIRY_KEYS = frozenset(("QW", "QV", "QH", "QR", "DQ", "RQ", "KQ"))


def _h(seed: int, *parts: str) -> int:
    d = hashlib.sha256("|".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(d[:8], "big")


def _digits(seed: int, n: int, *parts: str) -> str:
    return str(_h(seed, "digits", *parts) % (10**n)).zfill(n)


def identity(body: Transaction) -> str:
    """The fields that identify what is asked about (what decides hit or no hit)."""
    keep = ("NAM", "DOB", "SEX", "LIC", "LIS", "VIN", "OLN", "SOC", "CII", "FBI", "NIC")
    return ".".join(f"{t}/{v.strip().upper()}" for t, v in body.fields if t in keep)


def answer(seed: int, inp: Input) -> str | None:
    """The response text for a request (after the header), or None when nothing is sent back."""
    body = inp.body
    if not isinstance(body, Transaction):
        return None  # AM: forwarded to other agencies, nothing comes back
    mke, ori = inp.mke, body.ori
    ident = identity(body)
    f = dict(body.fields)
    nam = f.get("NAM", "UNKNOWN")
    dob = f.get("DOB", "")
    who = ".".join(x for x in (f"NAM/{nam}" if "NAM" in f else "", f"DOB/{dob}" if dob else "") if x)
    hit = _h(seed, mke, ident) % 100 < HIT_PERCENT
    if mke in ENTRY_KEYS:
        nic = f.get("NIC") or f"W{_digits(seed, 9, mke, ident)}"
        verb = {"EW": "ENTERED", "MW": "MODIFIED", "XW": "CANCELLED", "CW": "CLEARED"}[mke]
        return f"{mke}.{ori}.{verb}.NIC/{nic}.{who}".rstrip(".")
    if mke == "QW":
        if not hit:
            return f"QW.{ori}.NO NCIC WANT.{who}".rstrip(".")
        nic = _digits(seed, 9, "nic", ident)
        return (f"QW.{ori}.NCIC WANTED PERSON HIT.{who}.SEX/M.HGT/510.WGT/180.OFF/ARMED ROBBERY"
                f".ORI/CA0190000.NIC/W{nic}.OCA/{_digits(seed, 8, 'oca', ident)}"
                "\r\nWARNING - CONFIRM WARRANT WITH ORI BEFORE TAKING ACTION (YQ)")
    if mke == "QV":
        veh = ".".join(f"{t}/{f[t]}" for t in ("LIC", "LIS", "VIN") if t in f)
        if not hit:
            return f"QV.{ori}.NO NCIC WANT.{veh}".rstrip(".")
        return (f"QV.{ori}.NCIC STOLEN VEHICLE HIT.{veh}.VYR/2019.VMA/TOYT.VMO/CAM.VCO/GRY"
                f".ORI/CA0340000.NIC/V{_digits(seed, 9, 'nic', ident)}"
                "\r\nWARNING - CONFIRM WITH ORI BEFORE TAKING ACTION (YQ)")
    if mke == "QH":
        if not hit:
            return f"QH.{ori}.NO RECORD.{who}".rstrip(".")
        return f"QH.{ori}.CII/A{_digits(seed, 8, 'cii', ident)}.{who}.FBI/{_digits(seed, 9, 'fbi', ident)}"
    if mke == "QR":
        cii = f.get("CII") or f"A{_digits(seed, 8, 'cii', ident)}"
        if not hit and "CII" not in f:
            return f"QR.{ori}.NO RECORD.{who}".rstrip(".")
        return (f"QR.{ori}.CRIMINAL HISTORY.CII/{cii}.{who}"
                "\r\nARR/20190412 AGY/CAPD0001 CHG/PC 459 BURGLARY DISPO/CONVICTED"
                "\r\nARR/20210730 AGY/CASO0130 CHG/VC 23152 DUI DISPO/CONVICTED")
    if mke in ("DQ", "KQ"):
        if _h(seed, mke, ident) % 100 >= DMV_RECORD_PERCENT:
            return f"{mke}.{ori}.NO RECORD.{who}".rstrip(".")
        oln = f.get("OLN") or f"D{_digits(seed, 7, 'oln', ident)}"
        return (f"{mke}.{ori}.DMV DRIVER RECORD.OLN/{oln}.{who}.CLASS/C.STATUS/VALID"
                f".EXP/{2027 + _h(seed, 'exp', ident) % 4}0{1 + _h(seed, 'm', ident) % 9}15")
    if mke == "RQ":
        veh = ".".join(f"{t}/{f[t]}" for t in ("LIC", "VIN") if t in f)
        if _h(seed, mke, ident) % 100 >= DMV_RECORD_PERCENT:
            return f"RQ.{ori}.NO RECORD.{veh}".rstrip(".")
        return (f"RQ.{ori}.DMV REGISTRATION.{veh}.VYR/2018.VMA/HOND.VMO/CIV"
                f".RO/{'SMITH, ALEX' if _h(seed, 'ro', ident) % 2 else 'GARCIA, MARIA'}.EXP/20270630")
    if mke == "YQ":
        return f"YR.{ori}.HIT CONFIRMED.{ident}".rstrip(".")
    if mke in ONE_WAY_KEYS:  # a response (YR, DR …) or an AM: answered by the A alone
        return None
    return f"{mke}.{ori}.ACKNOWLEDGED"


_CHARGES = ("PC 459 BURGLARY", "VC 23152 DUI", "PC 211 ROBBERY", "HS 11350 POSSESSION", "PC 245 ASSAULT W/DW",
            "PC 487 GRAND THEFT", "VC 10851 VEHICLE THEFT", "PC 273.5 DOMESTIC VIOLENCE")


def lengthen(text: str, size: int) -> str:
    """``text`` with arrest-cycle lines appended (CR LF before each) until it is at least
    ``size`` characters: a long criminal-history answer, deterministic for a given text."""
    lines = [text]
    n = len(text)
    i = 0
    while n < size:
        line = (f"\r\nARR/{2000 + i % 25}{1 + i % 12:02d}{1 + i % 28:02d} AGY/CA{i % 58:02d}00{i % 100:03d} "
                f"CHG/{_CHARGES[i % len(_CHARGES)]} DISPO/{'CONVICTED' if i % 3 else 'DISMISSED'} CYC/{i + 1}")
        lines.append(line)
        n += len(line)
        i += 1
    return "".join(lines)


# --- answers in several parts ---------------------------------------------------------------

#: States whose repositories answer a III record request after the FBI (deterministic by seed).
III_STATES = ("CA", "AZ", "NV", "OR", "TX", "WA", "NM", "UT")


def parts_count(seed: int, inp: Input, lo: int, hi: int) -> int:
    """How many parts the answer to ``inp`` has, between ``lo`` and ``hi``: a seeded rule on the
    inquiry's identifying fields, so the same question is answered in as many parts every run."""
    if hi <= lo:
        return lo
    body = inp.body
    ident = identity(body) if isinstance(body, Transaction) else ""
    return lo + _h(seed, "parts", inp.mke, ident) % (hi - lo + 1)


def answer_parts(seed: int, inp: Input, n: int) -> list[str]:
    """The texts of an answer in ``n`` parts (``n`` = 1: :func:`answer` alone).

    What the real systems send (PROTOCOL.md §4): a III ``QR`` is answered by the FBI's record
    and then by each state holding part of it, over Nlets, as ``CR`` Triple I responses (Nlets
    Wiki §15); a ``QW``/``QV`` by the state file, then NCIC (the hit), then for a third part III
    (the combined QWI, NCIC 2000 Operating Manual, Wanted Person File §5.7); a ``YQ`` sent to up
    to three ORIs by one ``YR`` from each (Nlets Wiki §16). Other keys: the answer, then
    supplemental responses. A ``QR`` with no record has one part whatever ``n`` is: no state
    holds anything to send.
    """
    first = answer(seed, inp)
    if first is None or n <= 1:
        return [] if first is None else [first]
    body = inp.body
    assert isinstance(body, Transaction)
    mke, ori = inp.mke, body.ori
    ident = identity(body)
    f = dict(body.fields)
    who = ".".join(x for x in (f"NAM/{f['NAM']}" if "NAM" in f else "", f"DOB/{f['DOB']}" if "DOB" in f else "") if x)
    if mke == "QR":
        if "NO RECORD" in first.split("\r\n", 1)[0]:
            return [first]
        out = [first]
        start = _h(seed, "states", ident) % len(III_STATES)
        for i in range(1, n):
            st = III_STATES[(start + i) % len(III_STATES)]
            out.append(f"CR.{ori}.{st} STATE RESPONSE TO III.SID/{st}{_digits(seed, 8, 'sid', st, ident)}.{who}"
                       f"\r\nARR/20{10 + _h(seed, 'arr', st, ident) % 14}0{1 + _h(seed, 'm', st, ident) % 9}15"
                       f" AGY/{st}0{_digits(seed, 6, 'agy', st, ident)} CHG/{'BURGLARY' if i % 2 else 'THEFT'}"
                       " DISPO/CONVICTED".rstrip("."))
        return out
    if mke in ("QW", "QV"):
        what = "WANT" if mke == "QW" else "STOLEN VEHICLE"
        keys = ("LIC", "LIS", "VIN") if mke == "QV" else ()
        subject = ".".join(f"{t}/{f[t]}" for t in keys if t in f) if mke == "QV" else who
        out = [f"{mke}.{ori}.NO CALIFORNIA {what}.{subject}".rstrip("."), first]  # state file, then NCIC
        if n >= 3:
            out.append(f"QH.{ori}.III.NO RECORD.{who}".rstrip(".") if _h(seed, "iii", ident) % 2
                       else f"QH.{ori}.III.CII/A{_digits(seed, 8, 'cii', ident)}.{who}.FBI/{_digits(seed, 9, 'fbi', ident)}")
        for i in range(len(out), n):
            out.append(f"{mke}.{ori}.SUPPLEMENTAL RESPONSE {i + 1} OF {n}")
        return out[:n]
    if mke == "YQ":
        return [f"YR.{ori}.HIT CONFIRMED BY RESPONDENT {i + 1}.{ident}".rstrip(".") for i in range(n)]
    return [first] + [f"{mke}.{ori}.SUPPLEMENTAL RESPONSE {i + 1} OF {n}" for i in range(1, n)]


# --- unsolicited notifications ---------------------------------------------------------------

NOTIFICATION_KINDS = ("$.L.", "$.H.", "$.8.", "$.K.", "$.M.", "$.P.", "YQ", "LW", "LV", "LM", "AA", "AM")


def notification(seed: int, kind: str, dest: str, ori: str, n: int) -> str:
    """The text (``DEST.TEXT``) of the ``n``-th unsolicited notification of ``kind`` a stub sends,
    as NCIC and Nlets send them (PROTOCOL.md §5): NCIC notifications begin with ``$.`` and a type
    character instead of a message key, then the ORI of the record concerned.

    Deterministic in (seed, kind, dest, ori, n). A kind not listed in :data:`NOTIFICATION_KINDS`
    gets a plain text of that kind, so unknown kinds can be exercised too.
    """
    key = str(n)
    nic = f"W{_digits(seed, 9, 'ncic-notice', kind, dest, key)}"
    names = ("DOE, JOHN", "ROE, RICHARD", "SMITH, ALEX", "GARCIA, MARIA")
    nam = names[_h(seed, "nam", kind, dest, key) % len(names)]
    where = ("AZ0070000", "NV0020000", "CA0190000", "OR0240000")[_h(seed, "where", kind, dest, key) % 4]
    if kind == "$.L.":
        text = f"$.L.{ori}.LOCATE.NAM/{nam}.NIC/{nic}.DOL/20240{1 + n % 9}15.ORI/{where}.DIS/EXTR"
    elif kind == "$.H.":
        text = f"$.H.{ori}.HIT NOTIFICATION.NAM/{nam}.NIC/{nic}.INQUIRY BY ORI/{where}"
    elif kind == "$.8.":
        text = f"$.8.{ori}.OUT-OF-STATE RECORD.LIC/{_digits(seed, 7, 'lic', dest, key)}.LIS/AZ.NIC/V{nic[1:]}"
    elif kind == "$.K.":
        text = f"$.K.{ori}.MISSING INFORMATION.NIC/M{nic[1:]}.ADD BLT/FPC/DENTAL DATA"
    elif kind in ("$.M.", "$.P."):
        text = f"{kind}{ori}.MISSING/UNIDENTIFIED PERSON COMPARISON.NIC/M{nic[1:]}.NIC/U{nic[1:]}"
    elif kind == "YQ":
        text = f"YQ.{ori}.RTY/WP.RNO/1.PRI/U.NAM/{nam}.NIC/{nic}.OCA/{_digits(seed, 8, 'oca', dest, key)}"
    elif len(kind) >= 2 and kind[0] == "L" and kind[1:2] in "WVMLABGSP":
        text = f"{kind}.{ori}.LOCATED.NIC/{kind[1]}{nic[1:]}.DOL/20240{1 + n % 9}15.ORI/{where}"
    elif kind == "AA":
        text = f"AA.{ori}.TXT AMBER ALERT CHILD {nam} LAST SEEN NEAR {where}"
    elif kind == "AM":
        text = f"AM.{ori}.{dest}.TXT ADMINISTRATIVE MESSAGE {n}"
    elif kind.startswith("$."):
        text = f"{kind}{ori}.NOTIFICATION {n}"
    else:
        text = f"{kind}.{ori}.NOTIFICATION {n}"
    return f"{dest}.{text}"
