"""Issue 12 item 6: message-key edits (msc.protocol.edits, CONFIG.md "Edits") — pure.

A parsed message and a key's edit in, every problem out; the shipped tables equal the built-in
ones; ``msc config check`` names unknown tags/formats and impossible rules with file:line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msc.config.load import ConfigError, load
from msc.config.model import III_PURPOSE_CODES as MODEL_PURPOSES
from msc.mnemonics.directory import Directory
from msc.protocol import parse_input
from msc.protocol.edits import (
    BUILTIN,
    FORMATS,
    III_PURPOSE_CODES,
    MAX_DETAIL,
    KeyEdit,
    builtin,
    evaluate,
    reject_detail,
)
from tests.conftest import make_config


def problems(text: bytes, edit: KeyEdit | None = None) -> list[str]:
    inp = parse_input(text)
    return evaluate(edit or builtin(inp.mke), inp.body.fields, inp.body.destinations)


# Messages the shipped edits accept: every form of issue 12 items 1-4 and the README.
ACCEPTED = [
    b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101",
    b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.SEX/M.RAC/W",
    b"ICS1.QW.CA0130000.FBI/123456A",
    b"ICS1.QW.CA0130000.SOC/123456789",
    b"ICS1.QW.CA0130000.OLN/N1234567.OLS/NV",
    b"ICS1.QW.CA0130000.MNU/AS-123456789",
    b"ICS1.QW.CA0130000.SID/CA12345678",
    b"ICS1.QW.CA0130000.NAM/O'BRIEN-SMITH, MARY ANN 3RD.DOB/19651231",
    b"ICS1.QV.CA0130000.LIC/7ABC123",
    b"ICS1.QV.CA0130000.LIC/7ABC123.LIS/CA\r\n",
    b"ICS1.QV.CA0130000.VIN/1HGCM82633A004352",
    b"ICS1.QV.CA0130000.VIN/123456",  # pre-1981 VINs are shorter
    b"ICS1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/C.ATN/DET HOLMES",
    b"ICS1.QH.CA0130000.NL.TXTNAM/DOE, JANE.SEX/F.RAC/W.PUR/J.ATN/HR 12",
    b"ICS1.QR.CA0130000.FBI/123456A.PUR/C.ATN/A",
    b"ICS1.QR.CA0130000.CII/A12345678.PUR/X.ATN/CASEWORKER",
    b"ICS1.DQ.CA0130000.NV.TXTOLN/N1234567",
    b"ICS1.DQ.CA0130000.AZ,NV.TXTNAM/DOE, JOHN.DOB/19800101.SEX/M",
    b"ICS1.DQ.CA0130100.OLN/D1234567",
    b"ICS1.RQ.CA0130000.AZ,NV0000000,OR,TX,NM.*RQ7.TXT\r\nLIC/7ABC123.LIY/2025.LIT/PC",
    b"ICS1.RQ.CA0130000.OR.TXT VIN/1HGCM82633A004352",
    b"ICS1.RQ.CA0130000.LIC/ABC123.LIY/NX",
    b"ICS1.KQ.CA0130000.LIC/7ABC123",
    b"ICS1.YQ.CA0130000.AZ0000000.TXT\r\nRTY/SS.PRI/R.OCA/10000000000.NIC/V111110000.\r\nREM/PLS CONFIRM.",
    b"ICS1.YR.CA0130000.CA0340000.*HC1.TXTRTY/SS.CON/Y.NIC/W123456789.REM/CONFIRMED",
    b"ICS1.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W123456789",
    b"ICS1.EW.CA0130000.NAM/DOE, JOHN.SEX/M.RAC/W.DOB/19800101.OFF/ROBBERY.OCA/24-1234",
    b"ICS1.MW.CA0130000.NIC/W123456789.MIS/NEW ADDRESS",
    b"ICS1.CW.CA0130000.NAM/DOE, JOHN.OCA/24-1234",
    b"ICS1.XW.CA0130000.OCA/24-1234",
    b"ICS1.QW.CA0130000.NAM/X.DOB/19800101.MIS/ONE.MIS/TWO",  # MIS may repeat
    b"ICS1.ZZ.CA0130000.ABC/ANYTHING",  # a key msc knows nothing about: formats only
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_builtin_edits_accept(text):
    assert problems(text) == []


# (message, the problems E108 must name — all of them)
REFUSED = [
    (b"ICS1.QW.CA0130000", ["IDENTIFIERS MISSING: NEEDS NAM/+DOB/ OR NAM/+SEX/+RAC/ OR FBI/ OR SID/ OR SOC/ OR "
                            "OLN/ OR MNU/ OR NIC/"]),
    (b"ICS1.QW.CA0130000.NAM/SMITH, JOHN", ["IDENTIFIERS MISSING"]),
    (b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.SEX/M", ["IDENTIFIERS MISSING"]),
    (b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19801345", ["DOB/19801345 IS NOT A DATE CCYYMMDD"]),
    (b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800230", ["DOB/19800230 IS NOT A DATE"]),
    (b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/800101", ["DOB/800101 IS NOT A DATE"]),
    (b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101.NAM/DOE, JANE", ["NAM/ REPEATED 2 TIMES"]),
    (b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.SEX/Q.RAC/Z", ["SEX/Q IS NOT", "RAC/Z IS NOT"]),
    (b"ICS1.QW.CA0130000.NAM/1SMITH.DOB/19800101", ["NAM/1SMITH IS NOT"]),
    (b"ICS1.QW.CA0130000.SOC/000123456", ["SOC/000123456 IS NOT 9 DIGITS AS ISSUED"]),
    (b"ICS1.QW.CA0130000.MNU/123456789", ["MNU/123456789 IS NOT"]),
    (b"ICS1.QV.CA0130000", ["IDENTIFIERS MISSING: NEEDS LIC/ OR VIN/ OR NIC/"]),
    (b"ICS1.QV.CA0130000.LIS/CA", ["IDENTIFIERS MISSING"]),
    (b"ICS1.QV.CA0130000.LIC/7ABC-123", ["LIC/7ABC-123 IS NOT 1-10 LETTERS/DIGITS"]),
    (b"ICS1.QV.CA0130000.LIC/7ABC123.LIS/CAL", ["LIS/CAL IS NOT A 2-LETTER STATE CODE"]),
    (b"ICS1.QV.CA0130000.VIN/1HGCM82633A00435O", ["VIN/1HGCM82633A00435O IS NOT"]),
    (b"ICS1.QV.CA0130000.LIC/A.LIC/B", ["LIC/ REPEATED 2 TIMES"]),
    (b"ICS1.QH.CA0130000.NAM/SMITH, JOHN", ["PUR/ REQUIRED", "ATN/ REQUIRED", "IDENTIFIERS MISSING"]),
    (b"ICS1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/Z.ATN/A",
     ["PUR/Z IS NOT A PERMITTED PURPOSE CODE (A C D F H I J S V X)"]),
    (b"ICS1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/R.ATN/A", ["PUR/R IS NOT A PERMITTED"]),  # FBI only
    (b"ICS1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/CC.ATN/A", ["PUR/CC IS NOT ONE LETTER"]),
    (b"ICS1.QR.CA0130000.NAM/SMITH, JOHN.PUR/C.ATN/A", ["IDENTIFIERS MISSING: NEEDS FBI/ OR SID/ OR CII/"]),
    (b"ICS1.DQ.CA0130000.NV.TXTNAM/DOE, JOHN", ["IDENTIFIERS MISSING"]),
    (b"ICS1.DQ.CA0130000.AZ,NV,TX,NM,OR,UT.TXTOLN/N1", ["6 DESTINATIONS, AT MOST 5"]),
    (b"ICS1.RQ.CA0130000.AZ.TXTLIC/ABC123.LIY/25", ["LIY/25 IS NOT A YEAR CCYY OR NX"]),
    (b"ICS1.EW.CA0130000.NAM/DOE, JOHN", ["SEX/ REQUIRED", "RAC/ REQUIRED", "OCA/ REQUIRED", "IDENTIFIERS MISSING"]),
    (b"ICS1.MW.CA0130000.MIS/NEW ADDRESS", ["IDENTIFIERS MISSING: NEEDS NIC/ OR NAM/+OCA/ OR OCA/"]),
    (b"ICS1.YQ.CA0130000.AZ0000000.TXTRTY/SS.PRI/X", ["IDENTIFIERS MISSING", "PRI/X IS NOT U OR R"]),
    (b"ICS1.ZZ.CA0130000.DOB/1980.NIC/12", ["DOB/1980 IS NOT", "NIC/12 IS NOT"]),  # formats for any key
]


@pytest.mark.parametrize(("text", "expected"), REFUSED)
def test_builtin_edits_refuse_naming_every_problem(text, expected):
    found = problems(text)
    assert len(found) == len(expected), found
    for want, got in zip(sorted(expected), sorted(found), strict=True):
        assert got.startswith(want), (got, want)


# (prohibited purpose codes, PUR/ sent, the permitted list the refusal names): a prohibited code
# is never listed as permitted (the web console's form does not offer it either; newweb 9).
PROHIBITED = [
    (frozenset({"J"}), "Z", "(A C D F H I S V X)"),
    (frozenset({"J", "X"}), "Q", "(A C D F H I S V)"),
    (frozenset(), "Z", "(A C D F H I J S V X)"),
    (frozenset({"A", "C", "D", "F", "H", "I", "J", "S", "V"}), "Z", "(X)"),
]


@pytest.mark.parametrize(("prohibited", "pur", "listed"), PROHIBITED)
def test_the_permitted_list_leaves_out_prohibited_codes(prohibited, pur, listed):
    inp = parse_input(f"ICS1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/{pur}.ATN/A".encode())
    found = evaluate(builtin("QH"), inp.body.fields, inp.body.destinations, prohibited_purposes=prohibited)
    assert found == [f"PUR/{pur} IS NOT A PERMITTED PURPOSE CODE {listed}"]
    assert not prohibited & set(found[0].rsplit("(", 1)[1].rstrip(")").split())


def test_issue_examples_named_in_one_reject():
    # PUR/ and ATN/ missing are reported together, not one at a time
    detail = reject_detail(problems(b"ICS1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101"))
    assert detail == "PUR/ REQUIRED; ATN/ REQUIRED"
    detail = reject_detail(problems(b"ICS1.QW.CA0130000.NAM/SMITH.DOB/19801345.NAM/DOE"))
    assert detail == "NAM/ REPEATED 2 TIMES; DOB/19801345 IS NOT A DATE CCYYMMDD"


def test_layout_is_not_read_by_the_edits():
    assert problems(b"ICS1.QW.CA0130000.NAM/SMITH, JOHN\r\nDOB/1980\x7f0101\r\n") == []
    assert problems(b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/ 19800101\t") == []


def test_reject_detail_is_bounded_and_counts_what_is_left():
    many = [f"ABC/{i:04d} IS NOT A DATE CCYYMMDD" for i in range(300)]
    detail = reject_detail(many)
    assert len(detail) <= MAX_DETAIL
    shown = detail.count("IS NOT")
    assert detail.endswith(f"AND {300 - shown} MORE")
    assert reject_detail(many[:3]) == "; ".join(many[:3])
    assert reject_detail([]) == ""


def test_echoed_values_are_short():
    found = problems(b"ICS1.QW.CA0130000.DOB/" + b"9" * 500)
    assert found[-1].startswith("DOB/99999999999999999... IS NOT")


def test_custom_edit_rules():
    edit = KeyEdit(mke="QW", required=("OCA",), one_of=(("NAM", "DOB"),), repeatable=("NAM",), purpose_codes=("C",),
                   formats={"NAM": "name", "OCA": "digits", "PUR": "purpose"}, max_destinations=1)
    assert problems(b"ICS1.QW.CA0130000.NAM/A, B.NAM/C, D.DOB/X.OCA/12.PUR/C", edit) == []  # DOB has no format
    assert problems(b"ICS1.QW.CA0130000.AZ,NV.TXTNAM/A, B.OCA/1A.PUR/D", edit) == [
        "2 DESTINATIONS, AT MOST 1", "IDENTIFIERS MISSING: NEEDS NAM/+DOB/", "OCA/1A IS NOT DIGITS",
        "PUR/D IS NOT A PERMITTED PURPOSE CODE (C)"]


def test_purpose_codes_are_the_fbi_iii_table():
    assert III_PURPOSE_CODES == MODEL_PURPOSES == ("A", "C", "D", "F", "H", "I", "J", "S", "V", "X")
    assert "R" not in III_PURPOSE_CODES  # FBI use only


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_says_what_it_wants_and_refuses_blank(name):
    fmt = FORMATS[name]
    assert fmt.says == fmt.says.upper()
    assert not fmt.check("")
    assert not fmt.check("   ")


# --------------------------------------------------------------------------------------------
# The shipped tables, and config check
# --------------------------------------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[2] / "src" / "msc" / "data" / "msc.toml"


def test_shipped_tables_equal_the_builtin_rules(tmp_path):
    # the test config (tests/conftest.py) and the demo config (src/msc/data/msc.toml)
    for path in (make_config(tmp_path / "t"), _demo(tmp_path / "d")):
        d = Directory(load(path))
        assert set(d.edits) == set(d.routes)
        for mke, edit in d.edits.items():
            assert edit == builtin(mke), mke
            assert mke in BUILTIN


def test_a_config_without_edit_tables_gets_the_builtin_rules(tmp_path):
    path = make_config(tmp_path)
    text = path.read_text()
    path.write_text(text[: text.index("[edits]")] + text[text.index("[[agency]]"):])
    d = Directory(load(path))
    assert d.edits["QW"] == builtin("QW") and d.edits["QH"].required == ("PUR", "ATN")


def test_builtin_off_keeps_formats_but_no_identifier_rules(tmp_path):
    path = make_config(tmp_path)
    text = path.read_text()
    path.write_text(text[: text.index("[edits]")] + "[edits]\nbuiltin = false\n\n" + text[text.index("[[agency]]"):])
    edit = Directory(load(path)).edits["QW"]
    assert problems(b"ICS1.QW.CA0130000", edit) == []
    assert problems(b"ICS1.QW.CA0130000.DOB/19801345", edit) == ["DOB/19801345 IS NOT A DATE CCYYMMDD"]


def _demo(directory: Path) -> Path:
    directory.mkdir(parents=True)
    path = directory / "msc.toml"
    path.write_text(DEMO.read_text())
    return path


BAD_EDITS = [
    ('[[edit]]\nmke = ["QZ"]\none_of = [["LIC"]]\n', "edit[10].mke[0]", "not routed by any [[route]]"),
    ('[[edit]]\nmke = ["QW"]\none_of = [["LIC"]]\n', "edit[10].mke[0]", "already has its edits in edit[0]"),
    ('[[edit]]\nmke = ["ZZ"]\nrequired = ["LICENSE"]\n', "edit[10].required[0]", "is not a tag"),
    ('[[edit]]\nmke = ["ZZ"]\none_of = [[]]\n', "edit[10].one_of[0]", "needs at least one tag"),
    ('[[edit]]\nmke = ["ZZ"]\none_of = [["LIC", "l1c"]]\n', "edit[10].one_of[0][1]", "is not a tag"),
    ('[[edit]]\nmke = ["ZZ"]\nformats = { LIC = "plates" }\n', "edit[10].formats.LIC", "unknown format 'plates'"),
    ('[[edit]]\nmke = ["ZZ"]\npurpose_codes = ["C1"]\n', "edit[10].purpose_codes[0]", "not a purpose code"),
    ('[[edit]]\nmke = ["ZZ"]\nrequired = ["PUR"]\npurpose_codes = ["E"]\n', "edit[10].purpose_codes",
     "nothing could pass"),
    ('[[edit]]\nmke = ["ZZ"]\nmax_destinations = 0\n', "edit[10].max_destinations", "must be >= 1"),
    ('[[edit]]\nmke = ["ZZ"]\nrequired = ["LIC", "LIC"]\n', "edit[10].required", "listed twice"),
    ('[[edit]]\nmke = ["QC"]\nrequired = ["PUR"]\n', "edit[10].required", "must require ATN"),
]


@pytest.mark.parametrize(("extra", "path", "message"), BAD_EDITS)
def test_config_check_names_bad_edits_with_file_and_line(tmp_path, extra, path, message):
    routes = '[[route]]\nmke = ["ZZ"]\nupstream = "clets"\ncategory = "other"\n\n' \
             '[[route]]\nmke = ["QC"]\nupstream = "clets"\ncategory = "cori"\n\n'
    with pytest.raises(ConfigError) as exc:
        make_config(tmp_path, extra=routes + extra)
    issues = [i for i in exc.value.issues if i.path == path]
    assert issues and message in issues[0].message, exc.value.issues
    assert issues[0].line is not None
    line = (tmp_path / "msc.toml").read_text().splitlines()[issues[0].line - 1]
    assert line.split("=")[0].strip() in re.findall(r"[A-Za-z_]+", path) or line == "[[edit]]", line


def test_config_check_bad_edits_defaults(tmp_path):
    path = make_config(tmp_path)
    text = path.read_text().replace('purpose_codes = ["A", "C"', 'purpose_codes = ["AA", "C"', 1)
    text = text.replace("builtin = true", 'builtin = true\nformats = { DOB = "day", "L1C" = "plate" }', 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(path)
    messages = [f"{i.path}: {i.message}" for i in exc.value.issues]
    assert any(m.startswith("edits.purpose_codes[0]: 'AA' is not a purpose code") for m in messages), messages
    assert any("unknown format 'day' for DOB" in m for m in messages), messages
    assert any("'L1C' is not a tag" in m for m in messages), messages
