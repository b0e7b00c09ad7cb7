"""The authorization matrix, table-driven: every row of CONFIG.md's roles table and every code."""

from __future__ import annotations

import datetime as dt

import pytest

from msc.mnemonics.authz import check_operator, decide, is_self_inquiry, parse_dob
from msc.mnemonics.directory import Route, User
from msc.protocol.message import AdminText, Transaction

TODAY = dt.date(2026, 11, 25)
ALL = frozenset(("cjis", "cori", "dmv", "admin", "entry"))
SERVES = frozenset(("CA0130000",))


def user(role="full", ori="CA0130000", cert=dt.date(2027, 1, 1), name="DOE, JANE", dob=dt.date(1984, 3, 2)):
    return User(id="JD1234", name=name, ori=ori, role=role, password_hash="x", dob=dob, totp=None,
                certified_until=cert, active=True)


QW = Route("QW", "clets", "cjis", False)
EW = Route("EW", "clets", "cjis", True)
QH = Route("QH", "clets", "cori", False)
DQ = Route("DQ", "clets", "dmv", False)


def txn(*fields, ori="CA0130000"):
    return Transaction(ori=ori, fields=tuple(fields))


ROWS = [
    # (description, user, station authorizations, route, body, expected code or None)
    ("full operator, inquiry", user(), ALL, QW, txn(("NAM", "SMITH, JOHN")), None),
    ("full operator, entry", user(), ALL, EW, txn(("NAM", "SMITH, JOHN")), None),
    ("full operator, cori with PUR and ATN", user(), ALL, QH, txn(("NAM", "X"), ("PUR", "C"), ("ATN", "DET X")), None),
    ("full operator, admin message", user(), ALL, None, AdminText("CA0130000", ("APB",), "TEXT"), None),
    ("ltfa, inquiry", user("ltfa"), ALL, QW, txn(("NAM", "X")), None),
    ("ltfa, admin message", user("ltfa"), ALL, None, AdminText("CA0130000", ("APB",), "TEXT"), None),
    ("ltfa, dmv", user("ltfa"), ALL, DQ, txn(("OLN", "D1")), None),
    ("ltfa never enters records", user("ltfa"), ALL, EW, txn(("NAM", "X")), "E205"),
    ("practitioner cannot operate", user("practitioner"), ALL, QW, txn(("NAM", "X")), "E205"),
    ("admin cannot operate", user("admin"), ALL, QW, txn(("NAM", "X")), "E205"),
    ("investigator cannot operate", user("investigator"), ALL, QW, txn(("NAM", "X")), "E205"),
    ("station lacks the category", user(), frozenset(("cjis", "dmv")), QH, txn(("PUR", "C"), ("ATN", "A")), "E204"),
    ("station lacks admin", user(), frozenset(("cjis",)), None, AdminText("CA0130000", ("APB",), "T"), "E204"),
    ("station lacks entry", user(), frozenset(("cjis",)), EW, txn(("NAM", "X")), "E204"),
    ("ORI the station does not serve", user(), ALL, QW, txn(("NAM", "X"), ori="CA0190000"), "E206"),
    ("user of an agency not served", user(ori="CA0130100"), ALL, QW, txn(("NAM", "X")), "E206"),
    ("certification expired", user(cert=dt.date(2026, 11, 24)), ALL, QW, txn(("NAM", "X")), "E207"),
    ("certification expires today: still valid", user(cert=TODAY), ALL, QW, txn(("NAM", "X")), None),
    ("cori without PUR", user(), ALL, QH, txn(("NAM", "X"), ("ATN", "DET X")), "E108"),
    ("cori without ATN", user(), ALL, QH, txn(("NAM", "X"), ("PUR", "C")), "E108"),
    ("cori for employment (E)", user(), ALL, QH, txn(("NAM", "X"), ("PUR", "E"), ("ATN", "A")), "E209"),
    ("cori for licensing (J)", user(), ALL, QH, txn(("NAM", "X"), ("PUR", "J"), ("ATN", "A")), "E209"),
    ("self-inquiry by NAM+DOB", user(), ALL, QW, txn(("NAM", "DOE,JANE"), ("DOB", "19840302")), "E208"),
    ("self-inquiry, other date format", user(), ALL, QH,
     txn(("NAM", "doe, jane"), ("DOB", "1984-03-02"), ("PUR", "C"), ("ATN", "A")), "E208"),
    ("same name, other DOB: allowed", user(), ALL, QW, txn(("NAM", "DOE, JANE"), ("DOB", "19900101")), None),
    ("own DOB, other name: allowed", user(), ALL, QW, txn(("NAM", "ROE, JANE"), ("DOB", "19840302")), None),
    ("name only: allowed", user(), ALL, QW, txn(("NAM", "DOE, JANE")), None),
]


@pytest.mark.parametrize("desc,u,auths,route,body,expected", ROWS, ids=[r[0] for r in ROWS])
def test_matrix(desc, u, auths, route, body, expected):
    denied = decide(user=u, authorizations=auths, serves=SERVES, route=route, body=body,
                    prohibited_purposes=frozenset(("E", "J")), today=TODAY)
    assert (denied.code if denied else None) == expected


def test_every_authorization_code_is_covered_by_the_table():
    assert {r[5] for r in ROWS} - {None} == {"E108", "E204", "E205", "E206", "E207", "E208", "E209"}


@pytest.mark.parametrize("role,ok", [("full", True), ("ltfa", True), ("practitioner", False), ("admin", False),
                                     ("investigator", False)])
def test_who_may_log_on_to_a_terminal(role, ok):
    assert (check_operator(user(role), SERVES, TODAY) is None) == ok


def test_purposes_are_configurable():
    body = txn(("NAM", "X"), ("PUR", "C"), ("ATN", "A"))
    denied = decide(user=user(), authorizations=ALL, serves=SERVES, route=QH, body=body,
                    prohibited_purposes=frozenset(("C",)), today=TODAY)
    assert denied.code == "E209"


def test_dob_formats():
    assert parse_dob("19840302") == parse_dob("1984-03-02") == parse_dob("03021984") == dt.date(1984, 3, 2)
    assert parse_dob("garbage") is None
    assert not is_self_inquiry(user(dob=None), txn(("NAM", "DOE, JANE"), ("DOB", "19840302")))
