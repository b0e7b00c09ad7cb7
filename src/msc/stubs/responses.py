"""Deterministic, plausible NCIC/CLETS/DMV-style answers for the upstream simulators.

Whether an inquiry is a *hit* depends only on the seed and the inquiry's identifying fields,
so the same question gets the same answer in every run with the same ``--seed``:
``HIT_PERCENT`` of person/vehicle inquiries (10 %) hit, the rest answer ``NO RECORD``.
DMV inquiries return a record 90 % of the time. Response text is NCIC style:
``MKE.ORI.RESULT.TAG/value…`` with '.' between fields, CR LF between lines of a record.
"""

from __future__ import annotations

import hashlib

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
    if mke == "YR":
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
