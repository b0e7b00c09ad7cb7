"""The investigator's search form checked field by field (msc.web.filters): every bad value is
refused naming its field, in words (never an exception's text such as "Invalid isoformat
string" or "invalid literal for int()"); good values make the query ``msc journal search`` would."""

from __future__ import annotations

import pytest

from msc.journal.search import parse_time
from msc.web.filters import FilterError, search_query

CASE = {"case": "IA-2026-17"}

# (field, value, words the message must contain) — several bad inputs of each kind.
BAD = [
    ("case", "", "case reference"), ("case", " X", "case reference"), ("case", "x" * 33, "case reference"),
    ("case", "caf\u00e9", "case reference"),
    ("from", "yesterday", "From: 'yesterday' is not a time"), ("from", "2026-13-01", "From:"),
    ("from", "31/01/2026", "YYYY-MM-DD"), ("from", "2026-01-31T25:00", "From:"), ("from", "99999-01-01", "From:"),
    ("to", "tomorrow", "To: 'tomorrow' is not a time"), ("to", "2026-02-30", "To:"), ("to", "0", "To:"),
    ("limit", "abc", "Limit: 'abc' is not a whole number"), ("limit", "0", "Limit:"), ("limit", "-5", "Limit:"),
    ("limit", "1.5", "Limit:"), ("limit", "1e3", "Limit:"), ("limit", "99999999999999999999", "Limit:"),
    ("mnemonic", "I", "Mnemonic: 'I' is not a mnemonic"), ("mnemonic", "ICS 1", "Mnemonic:"),
    ("mnemonic", "ABCDEFGHIJK", "Mnemonic:"),
    ("user", "JD12", "User: 'JD12' is not a user ID"), ("user", "JD1234X", "User:"), ("user", "OS:", "User:"),
    ("ori", "CA013", "ORI: 'CA013' is not an ORI"), ("ori", "1A0130000", "ORI:"),
    ("mke", "Q", "Message key: 'Q' is not a message key"), ("mke", "QW.X", "Message key:"),
    ("kind", "DELIVER", "Kind: 'DELIVER' is not a record kind"), ("kind", "*", "Kind:"),
    ("taf", "ZZ", "TAF: 'ZZ' is not a TAF"), ("taf", "7F000001!", "TAF:"),
    ("txn", "a b", "Transaction: 'a b' is not a transaction ID"), ("txn", "x" * 65, "Transaction:"),
    ("code", "E-201", "Code: 'E-201' is not a code"),
    ("tokens", ["NAM SMITH"], "Field values: 'NAM SMITH' is not TAG:VALUE"), ("tokens", ["ZZZ:1"], "Field values:"),
    ("tokens", ["NAM:"], "Field values:"), ("tokens", 5, "Field values"),
]


@pytest.mark.parametrize("field,value,says", BAD)
def test_a_bad_value_is_refused_naming_its_field_in_words(field, value, says):
    body = {**CASE, field: value}
    with pytest.raises(FilterError) as exc:
        search_query(body)
    assert exc.value.field == field
    assert says in exc.value.message
    for python in ("isoformat", "invalid literal", "Traceback", "int()", "ValueError"):
        assert python not in exc.value.message


def test_from_not_before_to_is_refused_on_to():
    with pytest.raises(FilterError) as exc:
        search_query({**CASE, "from": "2026-02-01", "to": "2026-01-31"})
    assert exc.value.field == "to" and "later than From" in exc.value.message


# (form values, what the query holds) — the CLI's meaning of each filter.
GOOD = [
    ({"from": "2026-01-31", "to": "2026-02-01T08:00"}, {"start": parse_time("2026-01-31"),
                                                        "end": parse_time("2026-02-01T08:00")}),
    ({"from": " 2026-01-31T08:00+02:00 "}, {"start": parse_time("2026-01-31T08:00+02:00")}),
    ({"user": "jd1234", "mnemonic": "ics1", "ori": "ca0130000", "mke": "qw", "kind": "delivered"},
     {"user": "JD1234", "mnemonic": "ICS1", "ori": "CA0130000", "mke": "QW", "kind": "DELIVERED"}),
    ({"user": "OS:msc"}, {"user": "OS:msc"}), ({"mke": "$.h."}, {"mke": "$.H."}),
    ({"taf": "7f000001", "txn": "a1b2-c3", "code": "e201"}, {"taf": "7F000001", "txn": "a1b2-c3", "code": "E201"}),
    ({"limit": "1000"}, {"limit": 1000}), ({"limit": ""}, {"limit": None}), ({"limit": 25}, {"limit": 25}),
    ({"tokens": ["NAM:SMITH, JOHN", " ", "LIC:7ABC100"]}, {"tokens": [("NAM", "SMITH,JOHN"), ("LIC", "7ABC100")]}),
    ({"tokens": "NAM:SMITH, JOHN\n\nLIC:7ABC100"}, {"tokens": [("NAM", "SMITH,JOHN"), ("LIC", "7ABC100")]}),
]


@pytest.mark.parametrize("form,expected", GOOD)
def test_good_values_make_the_clis_query(form, expected):
    case, q = search_query({**CASE, **form})
    assert case == CASE["case"]
    for k, v in expected.items():
        assert getattr(q, k) == v, k
