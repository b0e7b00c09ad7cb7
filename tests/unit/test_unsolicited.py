"""The unsolicited table (msc.routing.forwarding): every kind of upstream notification, unknown
kinds, configured rules, the 24 x 7 landing rule, and the config checks of ``[[unsolicited]]``."""

from __future__ import annotations

import datetime as dt

import pytest

from msc.config.load import ConfigError, load
from msc.mnemonics.directory import Directory
from msc.protocol.message import parse_upstream
from msc.routing.forwarding import DEFAULT_RULES, Classifier, Rule, classifier, land
from tests.conftest import make_config

# Upstream message text → (class, deliver). Kinds come from parse_upstream, as in the router.
KINDS = [
    # Nlets/NCIC hit confirmation request (PPP §1.6.2 A, Nlets §16): 24 x 7.
    ("ICS2.YQ.CA0130000.NAM/SMITH, JOHN.NIC/W123", "hit-confirmation", "24x7"),
    # NCIC locate notification to the record's ORI, and locate messages by key: 24 x 7.
    ("ICS2.$.L.CA0130000.LOCATE WANTED PERSON NIC/W123456789", "locate", "24x7"),
    ("ICS2.LW.CA0130000.NIC/W123456789.DOL/20240101", "locate", "24x7"),
    ("ICS2.LWJ.CA0130000.NIC/W1", "locate", "24x7"),
    ("ICS2.LM.CA0130000.NIC/M1", "locate", "24x7"),
    ("ICS2.LV.CA0130000.NIC/V1", "locate", "24x7"),
    ("ICS2.LL.CA0130000.NIC/L1", "locate", "24x7"),
    ("ICS2.LA.CA0130000.NIC/A1", "locate", "24x7"),
    ("ICS2.LB.CA0130000.NIC/B1", "locate", "24x7"),
    ("ICS2.LG.CA0130000.NIC/G1", "locate", "24x7"),
    ("ICS2.LS.CA0130000.NIC/S1", "locate", "24x7"),
    ("ICS2.LP.CA0130000.NIC/P1", "locate", "24x7"),
    # NCIC hit notification (e.g. $.H.TTP threat to protectee): 24 x 7.
    ("ICS2.$.H.CA0130000 HIT NOTIFICATION", "hit-notification", "24x7"),
    ("ICS2.$.H.TTP CA0130000 THREAT TO PROTECTEE", "hit-notification", "24x7"),
    ("CA0130000.AA.CA0130000.TXT AMBER ALERT", "amber-alert", "24x7"),
    # File-maintenance and comparison notices: to the addressed station.
    ("ICS2.$.8.CA0130000 OUT-OF-STATE VEHICLE", "ncic-notice", "addressed"),
    ("ICS2.$.K.CA0130000 MISSING INFORMATION", "ncic-notice", "addressed"),
    ("ICS2.$.M.CA0130000 MISSING/UNIDENTIFIED MATCH", "ncic-notice", "addressed"),
    ("ICS2.$.P.CA0130000 POTENTIAL MATCH", "ncic-notice", "addressed"),
    ("ICS2.YR.CA0130000.CONFIRMED", "hit-confirmation-response", "addressed"),
    ("ICS2.AM.CA0130100.ICS2.TXT MEETING AT 10", "administrative", "addressed"),
    ("ICS2.AML.CA0130100.ICS2.TXT LE ONLY", "administrative", "addressed"),
    # Nlets generic inquiry/response start with L but are not locates.
    ("ICS2.LQ.NY0000000.TXT WIDGET REGISTRATION", "nlets-generic", "addressed"),
    ("ICS2.LR.NY0000000.TXT WIDGET RECORD", "nlets-generic", "addressed"),
    # Unknown kinds: addressed, and counted as unknown by the router.
    ("ICS2.$.Z.CA0130000 SOMETHING NEW", None, None),
    ("ICS2.ZZ.CA0130000.NEW KEY", None, None),
    ("ICS2.NOTICE", None, None),
    ("ICS2.free text from a state operator", None, None),
    ("ICS2.L", None, None),
]


@pytest.mark.parametrize(("text", "cls", "deliver"), KINDS)
def test_default_table(text, cls, deliver):
    rule = Classifier().classify(parse_upstream(text.encode()).kind)
    assert (rule.name if rule else None, rule.deliver if rule else None) == (cls, deliver)


def test_configured_rules_add_and_replace_and_specific_beats_general():
    c = Classifier([
        Rule("state-notice", ("$.*",), "addressed"),   # every other NCIC notification
        Rule("my-locates", ("LW*",), "addressed"),      # replaces the default LW* pattern
        Rule("bolo", ("BOLO", "B*"), "24x7"),
    ])
    assert c.classify("$.L.").name == "locate"         # exact default beats the configured prefix
    assert c.classify("$.Z.").name == "state-notice"
    assert c.classify("LWJ").name == "my-locates"
    assert c.classify("LV").name == "locate"
    assert c.classify("BOLO").name == "bolo"
    assert c.classify("BX").name == "bolo"
    assert c.classify("QW") is None
    assert c.names[:3] == ["state-notice", "my-locates", "bolo"]


def test_every_default_kind_is_valid_config_syntax():
    from msc.config.check_routes import _KIND_RE

    for rule in DEFAULT_RULES:
        for k in rule.kinds:
            assert _KIND_RE.match(k), k


UNSOLICITED_OK = '''
[[unsolicited]]
name = "state-bulletin"
kinds = ["SB", "$.*"]
deliver = "24x7"
'''


def test_configured_table_is_used_by_the_directory(tmp_path):
    d = Directory(load(make_config(tmp_path, extra=UNSOLICITED_OK)))
    assert classifier(d).classify("SB").name == "state-bulletin"
    assert classifier(d).classify("$.Q.").deliver == "24x7"
    assert classifier(d).classify("YQ").name == "hit-confirmation"


@pytest.mark.parametrize(("rules", "path", "fragment"), [
    ('name = "x"\nkinds = ["yq"]\ndeliver = "24x7"', "unsolicited[0].kinds[0]", "not a kind"),
    ('name = "x"\nkinds = ["$.LL."]\ndeliver = "24x7"', "unsolicited[0].kinds[0]", "not a kind"),
    ('name = "x"\nkinds = ["*"]\ndeliver = "24x7"', "unsolicited[0].kinds[0]", "not a kind"),
    ('name = "x"\nkinds = []\ndeliver = "24x7"', "unsolicited[0].kinds", "at least one"),
    ('name = "Bad Name"\nkinds = ["SB"]\ndeliver = "24x7"', "unsolicited[0].name", "class name"),
    ('name = "unknown"\nkinds = ["SB"]\ndeliver = "24x7"', "unsolicited[0].name", "class name"),
    ('name = "x"\nkinds = ["SB"]\ndeliver = "24x7"\n[[unsolicited]]\nname = "x"\nkinds = ["SC"]\ndeliver = "addressed"',
     "unsolicited[1].name", "already used"),
    ('name = "x"\nkinds = ["SB"]\ndeliver = "24x7"\n[[unsolicited]]\nname = "y"\nkinds = ["SB"]\ndeliver = "addressed"',
     "unsolicited[1].kinds[0]", "already classified"),
    ('name = "x"\nkinds = ["SB"]\ndeliver = "printer"', "unsolicited[0].deliver", "Invalid enum value"),
])
def test_config_check_refuses_bad_rules(tmp_path, rules, path, fragment):
    with pytest.raises(ConfigError) as exc:
        load(make_config(tmp_path, extra="[[unsolicited]]\n" + rules))
    matching = [i for i in exc.value.issues if i.path.startswith(path)]
    assert matching, [str(i) for i in exc.value.issues]
    assert fragment in matching[0].message


@pytest.mark.parametrize(("route_extra", "fragment"), [
    ("answer_window_s = 10", "must be >= the route's timeout_s (30)"),
    ("timeout_s = 60\nanswer_window_s = 45", "must be >= the route's timeout_s (60)"),
])
def test_config_check_answer_window_not_shorter_than_timeout(tmp_path, route_extra, fragment):
    path = make_config(tmp_path)
    path.write_text(path.read_text().replace('category = "cori"', f'category = "cori"\n{route_extra}', 1))
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert any(i.path == "route[1].answer_window_s" and fragment in i.message for i in exc.value.issues)


NOON = dt.datetime(2024, 1, 10, 20, 0, tzinfo=dt.UTC)  # a Wednesday


@pytest.mark.parametrize(("mnemonic", "staffed", "connected", "expected"), [
    ("ICS2", True, {"ICS2", "ICS1"}, "ICS1"),    # not staffed 24x7 → duty station
    ("ICS2", False, {"ICS2"}, "ICS2"),           # an addressed kind stays
    ("ICS1", True, {"ICS1"}, "ICS1"),            # staffed and connected: stays
    ("ICS1", True, set(), "ICS1"),               # the duty station itself: nowhere better
    ("ECC2", True, {"ECC1"}, "ECP1"),            # a CAD workstation: its host is not 24x7
    ("ECC2", False, {"ECC1"}, "ECC2"),
    ("ECP1", True, {"ECP1"}, "ECP1"),            # a 24x7 printer
    ("ECM1", True, set(), "ECP1"),               # a pooled mnemonic: its agency's duty station
])
def test_land(tmp_path, mnemonic, staffed, connected, expected):
    d = Directory(load(make_config(tmp_path)))
    assert land(d, mnemonic, staffed, NOON, lambda e: e in connected) == expected


def test_config_md_lists_the_shipped_table():
    """docs/CONFIG.md is where an administrator reads the defaults: it must match the code."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md").read_text()
    section = doc.split("The shipped table:", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (tuple(re.findall(r"`([^`]+)`", cells[1])), cells[2])
    assert rows == {r.name: (r.kinds, r.deliver) for r in DEFAULT_RULES}
