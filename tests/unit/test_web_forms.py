"""The web console's forms and their inline check (msc.web.forms): generated from the switch's
message-key edit table, and judged by the switch's own parser and edits (one implementation)."""

from __future__ import annotations

import pytest

from msc.config.load import load
from msc.mnemonics.directory import Directory
from msc.protocol import edits
from msc.protocol.message import parse_input
from msc.web import forms
from msc.web.app import LogonLimiter
from tests.conftest import make_config

PROHIBITED = frozenset("EJ")


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return Directory(load(make_config(tmp_path_factory.mktemp("forms"))))


def test_forms_follow_the_edit_table(directory):
    specs = {f["mke"]: f for f in forms.form_specs(directory, PROHIBITED)}
    assert list(specs)[:8] == ["QW", "QV", "DQ", "RQ", "QH", "QR", "YQ", "YR"] and "AM" in specs
    qh = specs["QH"]
    assert qh["required"] == ["PUR", "ATN"]
    assert ["NAM", "DOB"] in qh["one_of"]
    pur = next(f for f in qh["fields"] if f["tag"] == "PUR")
    assert pur["required"] and "E" not in pur["choices"] and "J" not in pur["choices"] and "C" in pur["choices"]
    dob = next(f for f in specs["QW"]["fields"] if f["tag"] == "DOB")
    assert dob["format"] == "date" and dob["says"] == edits.FORMATS["date"].says


def test_a_tag_an_agency_requires_is_offered(tmp_path):
    extra = '\n[[edit]]\nmke = ["QV"]\nrequired = ["OCA"]\none_of = [["LIC"], ["VIN"]]\n'
    cfg = make_config(tmp_path)
    text = cfg.read_text().replace('[[edit]]\nmke = ["QV"]                           # vehicle\none_of = [["LIC"], ["VIN"], ["NIC"]]\n', "")
    cfg.write_text(text + extra)
    spec = next(f for f in forms.form_specs(Directory(load(cfg)), PROHIBITED) if f["mke"] == "QV")
    assert "OCA" in [f["tag"] for f in spec["fields"]] and spec["required"] == ["OCA"]


def test_keys_not_routed_get_no_form(tmp_path):
    cfg = make_config(tmp_path)
    text = cfg.read_text().replace('mke = ["DQ", "RQ", "KQ"]', 'mke = ["KQ"]')
    for key in ("DQ", "RQ"):  # their edits go too (an edit of an unrouted key is a config error)
        start = text.index(f'[[edit]]\nmke = ["{key}"]')
        text = text[:start] + text[text.index("[[edit]]", start + 1):]
    cfg.write_text(text)
    assert {"DQ", "RQ"}.isdisjoint(f["mke"] for f in forms.form_specs(Directory(load(cfg)), PROHIBITED))


CHECKS = [
    # text, ok, fields with problems, a general problem containing
    ("QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101", True, set(), None),
    ("QW.CA0130000.NAM/SMITH, JOHN.DOB/19801301", False, {"DOB"}, None),
    ("QW.CA0130000.NAM/SMITH, JOHN", False, set(), "IDENTIFIERS MISSING"),
    ("QW.CA0130000.NAM/SMITH, JOHN.SEX/Q.RAC/W", False, {"SEX"}, None),
    ("QV.CA0130000.LIC/TOOLONGPLATE99", False, {"LIC"}, None),
    ("QV.CA0130000.VIN/1HGCM82633A00435Q", False, {"VIN"}, None),
    ("QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101", False, {"PUR", "ATN"}, None),
    ("QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/C.ATN/DET JONES", True, set(), None),
    ("QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/E.ATN/DET JONES", False, {"PUR"}, None),  # E209
    ("QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/Z.ATN/DET JONES", False, {"PUR"}, None),
    ("QR.CA0130000.FBI/123456789.PUR/C.ATN/DET JONES.REL/DA", True, set(), None),
    ("DQ.CA0130000.AZ,NV.TXTNAM/DOE, JOHN.DOB/19800101", True, set(), None),
    ("DQ.CA0130000.AZ,NV,OR,WA,UT,ID.TXTOLN/D1234567", False, set(), "6 DESTINATIONS"),
    ("RQ.CA0130000.AZ.TXTLIC/7ABC123.LIS/AZ", True, set(), None),
    ("YQ.CA0130000.AZ0070000.TXTPRI/U.NIC/W123456789", True, set(), None),
    ("AM.CA0130000.ICS2.TXT ROAD CLOSED AT MAIN ST", True, set(), None),
    ("QW.CA013", False, set(), "E107"),
    ("ZZ.CA0130000.NAM/X", False, set(), "E301"),
    ("QW.CA0130000.NAM/SMITH\x1b", False, set(), "E102"),
    ("QW.CA0130000.NAM/SMİTH", False, set(), "E102"),
    ("QW.CA0130000..DOB/19800101", False, set(), "E108"),
    ("LOGON.TS0001.-.secret", False, set(), "NOT SENT FROM THE WEB CONSOLE"),
    ("PWD.old one.new one", False, set(), "NOT SENT FROM THE WEB CONSOLE"),
    ("", False, set(), "E106"),
]


@pytest.mark.parametrize("text,ok,bad_fields,general", CHECKS)
def test_check_uses_the_switchs_own_rules(directory, text, ok, bad_fields, general):
    res = forms.check(directory, PROHIBITED, "ICS1", text)
    assert res["ok"] is ok, res
    assert set(res["fields"]) == bad_fields, res
    if general:
        assert any(general in g for g in res["general"]), res


@pytest.mark.parametrize("text", [t for t, ok, *_ in CHECKS if ok and not t.startswith("AM")])
def test_what_passes_the_check_passes_the_edits(directory, text):
    """The inline check and the switch agree: a text the page lets through passes the key's edit."""
    body = parse_input(f"ICS1.{text}".encode()).body
    edit = directory.edits[text.split(".")[0]]
    assert edits.evaluate(edit, body.fields, body.destinations, prohibited_purposes=PROHIBITED) == []


def test_logon_limiter_per_address_and_bounded():
    now = [0.0]
    lim = LogonLimiter(3, max_addresses=2, clock=lambda: now[0])
    # allow() returns the attempt's stamp (for forgive(), a logon that succeeded) or None
    assert [lim.allow("10.0.0.1") is not None for _ in range(4)] == [True, True, True, False]
    assert lim.allow("10.0.0.2") is not None  # another address has its own count
    now[0] = 59.9
    assert lim.allow("10.0.0.1") is None
    now[0] = 60.1
    assert lim.allow("10.0.0.1") is not None  # the window slid
    lim.allow("10.0.0.3")
    assert len(lim.seen) == 2  # the least recently seen address was forgotten
