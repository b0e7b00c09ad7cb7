"""Every uniqueness rule of the configuration (issue 13 item 6): a name used twice is an error that
names both places (file:line) — in `msc config check` and on reload — never a silent replacement.

Each row edits the generated test configuration (tests/conftest.py) so that one name is used a
second time, and says where the error must point (the second use) and which place it must
name (the first use), each as (text on the line, which occurrence of that text).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from msc.config.load import ConfigError, load
from tests.conftest import free_port, make_config

STATION = """
[[station]]
mnemonic = "{m}"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
addresses = ["127.0.0.1"]
authorizations = ["cjis"]
"""
HOST = """
[[station]]
mnemonic = "HST1"
kind = "host"
ori = "CA0130100"
serves = ["CA0130100"]
addresses = ["127.0.0.1"]
mnemonics = {ms}
authorizations = ["cjis"]
"""
POOL = """
[[pool]]
name = "{name}"
ori = "CA0130100"
serves = ["CA0130100"]
mnemonics = {ms}
addresses = ["127.0.0.0/8"]
authorizations = ["cjis"]
"""
FORWARD = """
[[forward]]
from = "ICS2"
to = "ICS1"
days = {days}
start = "{start}"
end = "{end}"
"""

# id, (old, new) replacements in msc.toml, text appended to msc.toml, issue path,
# (needle, occurrence) of the second use's line, (needle, occurrence) of the first use's line
RULES = [
    ("station-mnemonic", (), STATION.format(m="ICS1"), "station[5].mnemonic",
     ('mnemonic = "ICS1"', 1), ('mnemonic = "ICS1"', 0)),
    ("station-mnemonic-vs-host-workstation", (), STATION.format(m="ECC2"), "station[5].mnemonic",
     ('mnemonic = "ECC2"', 0), ('mnemonics = ["ECC1", "ECC2", "ECC3"]', 0)),
    ("host-workstation-vs-station", [('mnemonics = ["ECC1", "ECC2", "ECC3"]', 'mnemonics = ["ECC1", "ECC2", "ICS2"]')],
     "", "station[3].mnemonics[2]", ('mnemonics = ["ECC1", "ECC2", "ICS2"]', 0), ('mnemonic = "ICS2"', 0)),
    ("host-workstation-twice-in-its-list", [('mnemonics = ["ECC1", "ECC2", "ECC3"]', 'mnemonics = ["ECC1", "ECC2", "ECC2"]')],
     "", "station[3].mnemonics[2]", ('mnemonics = ["ECC1", "ECC2", "ECC2"]', 0), ('mnemonics = ["ECC1", "ECC2", "ECC2"]', 0)),
    ("host-workstation-vs-other-host", (), HOST.format(ms='["HST1", "ECC3"]'), "station[5].mnemonics[1]",
     ('mnemonics = ["HST1", "ECC3"]', 0), ('mnemonics = ["ECC1", "ECC2", "ECC3"]', 0)),
    ("pooled-vs-station", [('mnemonics = ["ECM1", "ECM2"]', 'mnemonics = ["ECM1", "ICS1"]')], "",
     "pool[0].mnemonics[1]", ('mnemonics = ["ECM1", "ICS1"]', 0), ('mnemonic = "ICS1"', 0)),
    ("pooled-vs-host-workstation", [('mnemonics = ["ECM1", "ECM2"]', 'mnemonics = ["ECM1", "ECC3"]')], "",
     "pool[0].mnemonics[1]", ('mnemonics = ["ECM1", "ECC3"]', 0), ('mnemonics = ["ECC1", "ECC2", "ECC3"]', 0)),
    ("pooled-twice-in-its-list", [('mnemonics = ["ECM1", "ECM2"]', 'mnemonics = ["ECM1", "ECM1"]')], "",
     "pool[0].mnemonics[1]", ('mnemonics = ["ECM1", "ECM1"]', 0), ('mnemonics = ["ECM1", "ECM1"]', 0)),
    ("pooled-vs-other-pool", (), POOL.format(name="ECMDT2", ms='["ECM9", "ECM2"]'), "pool[1].mnemonics[1]",
     ('mnemonics = ["ECM9", "ECM2"]', 0), ('mnemonics = ["ECM1", "ECM2"]', 0)),
    ("pool-name", (), POOL.format(name="ECMDT", ms='["ECM8"]'), "pool[1].name",
     ('name = "ECMDT"', 1), ('name = "ECMDT"', 0)),
    ("pool-name-vs-station", (), POOL.format(name="ICS2", ms='["ECM8"]'), "pool[1].name",
     ('name = "ICS2"', 0), ('mnemonic = "ICS2"', 0)),
    ("group-name", (), '\n[[group]]\nname = "APB"\nmembers = ["ICS2"]\n', "group[1].name",
     ('name = "APB"', 1), ('name = "APB"', 0)),
    ("group-name-vs-station", (), '\n[[group]]\nname = "ECP1"\nmembers = ["ICS2"]\n', "group[1].name",
     ('name = "ECP1"', 0), ('mnemonic = "ECP1"', 0)),
    ("group-member-twice", [('members = ["ICS1", "ECP1"]', 'members = ["ICS1", "ECP1", "ICS1"]')], "",
     "group[0].members[2]", ('members = ["ICS1", "ECP1", "ICS1"]', 0), ('members = ["ICS1", "ECP1", "ICS1"]', 0)),
    ("listener-name", (), '\n[[listener]]\nname = "terminals"\nbind = "127.0.0.1:0"\n', "listener[1].name",
     ('name = "terminals"', 1), ('name = "terminals"', 0)),
    ("listener-bind", (), '\n[[listener]]\nname = "second"\nbind = "127.0.0.1:{port}"\n', "listener[1].bind",
     ('bind = "127.0.0.1:{port}"', 1), ('bind = "127.0.0.1:{port}"', 0)),
    ("listener-bind-wildcard", (), '\n[[listener]]\nname = "second"\nbind = "0.0.0.0:{port}"\n', "listener[1].bind",
     ('bind = "0.0.0.0:{port}"', 0), ('bind = "127.0.0.1:{port}"', 0)),
    ("metrics-bind-vs-listener", [('bind = "127.0.0.1:{mport}"', 'bind = "127.0.0.1:{port}"')], "", "metrics.bind",
     ('bind = "127.0.0.1:{port}"', 1), ('bind = "127.0.0.1:{port}"', 0)),
    ("upstream-name", (), '\n[[upstream]]\nname = "clets"\nendpoints = ["127.0.0.1:9"]\n', "upstream[1].name",
     ('name = "clets"', 1), ('name = "clets"', 0)),
    ("upstream-secondary-is-the-primary", [("endpoints = [{ep}]", "endpoints = [{ep}, {ep}]")], "",
     "upstream[0].endpoints[1]", ("endpoints = [{ep}, {ep}]", 0), ("endpoints = [{ep}, {ep}]", 0)),
    ("agency-ori", (), '\n[[agency]]\nori = "CA0130000"\nname = "Again"\n', "agency[2].ori",
     ('ori = "CA0130000"\nname = "Again"', 0), ('ori = "CA0130000"\nname = "Imperial', 0)),
    ("group-name-vs-ori", (), '\n[[group]]\nname = "CA0130100"\nmembers = ["ICS2"]\n', "group[1].name",
     ('name = "CA0130100"', 0), (None, 0)),
    ("message-key", [('mke = ["QH", "QR"]', 'mke = ["QH", "QW"]')], "", "route[1].mke[1]",
     ('mke = ["QH", "QW"]', 0), ('mke = ["QW", "QV"', 0)),
    ("edit-message-key", (), '\n[[edit]]\nmke = ["QV"]\none_of = [["VIN"]]\n', "edit[10].mke[0]",
     ('mke = ["QV"]', 1), ('mke = ["QV"]', 0)),
    ("edit-message-key-twice-in-its-list", [('mke = ["MW", "XW", "CW"]', 'mke = ["MW", "XW", "MW"]')], "",
     "edit[3].mke[2]", ('mke = ["MW", "XW", "MW"]', 0), ('mke = ["MW", "XW", "MW"]', 0)),
    ("unsolicited-class-name", (), '\n[[unsolicited]]\nname = "locates"\nkinds = ["SB"]\ndeliver = "24x7"\n'
     '\n[[unsolicited]]\nname = "locates"\nkinds = ["SC"]\ndeliver = "addressed"\n', "unsolicited[1].name",
     ('name = "locates"', 1), ('name = "locates"', 0)),
    ("unsolicited-kind", (), '\n[[unsolicited]]\nname = "one"\nkinds = ["SB"]\ndeliver = "24x7"\n'
     '\n[[unsolicited]]\nname = "two"\nkinds = ["SD", "SB"]\ndeliver = "addressed"\n', "unsolicited[1].kinds[1]",
     ('kinds = ["SD", "SB"]', 0), ('kinds = ["SB"]', 0)),
    ("forward-overlap", (), FORWARD.format(days='["MON"]', start="08:00", end="17:00")
     + FORWARD.format(days='["MON", "TUE"]', start="16:00", end="18:00").replace('to = "ICS1"', 'to = "ECP1"'),
     "forward[1].from_", ('from = "ICS2"', 1), ('from = "ICS2"', 0)),
    ("forward-overlap-past-midnight", (), FORWARD.format(days='["FRI"]', start="22:00", end="06:00")
     + FORWARD.format(days='["SAT"]', start="05:00", end="07:00"), "forward[1].from_", ('from = "ICS2"', 1),
     ('from = "ICS2"', 0)),
]

# The same kinds of names where they do not clash: no issue at all.
FINE = [
    ("host-lists-its-own-mnemonic", [('mnemonics = ["ECC1", "ECC2", "ECC3"]', 'mnemonics = ["ECC1", "ECC2"]')], ""),
    ("listener-port-0-twice", (), '\n[[listener]]\nname = "second"\nbind = "127.0.0.1:0"\n'),
    ("forwards-that-do-not-overlap", (), FORWARD.format(days='["MON"]', start="08:00", end="17:00")
     + FORWARD.format(days='["MON"]', start="17:00", end="18:00")),
    ("same-hours-other-days", (), FORWARD.format(days='["MON"]', start="08:00", end="17:00")
     + FORWARD.format(days='["TUE"]', start="08:00", end="17:00")),
]


def _line(text: str, needle: str, occurrence: int) -> int:
    first = needle.split("\n")[0]
    hits = [text[: m].count("\n") + 1 for m in _find_all(text, needle)]
    assert len(hits) > occurrence, (needle, first)
    return hits[occurrence]


def _find_all(text: str, needle: str):
    i = text.find(needle)
    while i >= 0:
        yield i
        i = text.find(needle, i + 1)


def _config(tmp_path: Path, edits, extra: str) -> tuple[Path, dict]:
    port, mport, up = free_port(), free_port(), free_port()
    path = make_config(tmp_path, port=port, metrics_port=mport, upstream_ports=[up])
    fmt = {"port": port, "mport": mport, "ep": f'"127.0.0.1:{up}"'}
    text = path.read_text()
    for old, new in edits:
        old, new = old.format(**fmt), new.format(**fmt)
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text + extra.format(**fmt))
    return path, fmt


@pytest.mark.parametrize("name,edits,extra,path,second,first", RULES, ids=[r[0] for r in RULES])
def test_a_name_used_twice_is_an_error_naming_both_places(tmp_path, name, edits, extra, path, second, first):
    cfg, fmt = _config(tmp_path, edits, extra)
    text = cfg.read_text()
    with pytest.raises(ConfigError) as exc:
        load(cfg)
    issues = [i for i in exc.value.issues if i.path == path]
    assert len(issues) == 1, [str(i) for i in exc.value.issues]
    issue = issues[0]
    assert issue.file == str(cfg)
    assert issue.line == _line(text, second[0].format(**fmt), second[1]), str(issue)
    if first[0] is not None:
        assert f"{cfg}:{_line(text, first[0].format(**fmt), first[1])})" in issue.message, str(issue)
    # `msc config check` says the same, exit status 2.
    from tests.e2e.conftest import run

    r = run("config", "check", "--config", str(cfg))
    assert r.returncode == 2 and str(issue) in r.stderr, r.stderr


@pytest.mark.parametrize("name,edits,extra", FINE, ids=[r[0] for r in FINE])
def test_names_that_do_not_clash_are_fine(tmp_path, name, edits, extra):
    cfg, _ = _config(tmp_path, edits, extra)
    load(cfg)


USER_RULES = [
    # id, how users.toml is edited, issue path, (needle, occurrence) second, first
    ("user-id", lambda t: t + t[t.index("[[user]]"): t.index("[[user]]", t.index("[[user]]") + 1)],
     "user[10].id", ('id = "TS0001"', 1), ('id = "TS0001"', 0)),
    ("removed-user-id", lambda t: t + '\n[[removed]]\nid = "OLD001"\nremoved = 2026-01-01\n'
     '\n[[removed]]\nid = "OLD001"\nremoved = 2026-02-01\n', "removed[1].id", ('id = "OLD001"', 1), ('id = "OLD001"', 0)),
]


@pytest.mark.parametrize("name,edit,path,second,first", USER_RULES, ids=[r[0] for r in USER_RULES])
def test_users_file_names_used_twice(tmp_path, name, edit, path, second, first):
    cfg = make_config(tmp_path)
    users = tmp_path / "users.toml"
    users.write_text(edit(users.read_text()))
    text = users.read_text()
    with pytest.raises(ConfigError) as exc:
        load(cfg)
    issues = [i for i in exc.value.issues if i.path == path]
    assert len(issues) == 1, [str(i) for i in exc.value.issues]
    assert issues[0].file == str(users)
    assert issues[0].line == _line(text, second[0], second[1])
    assert f"{users}:{_line(text, first[0], first[1])})" in issues[0].message


async def test_reload_refuses_a_second_station_with_a_duty_stations_mnemonic(harness, tmp_path):
    """The issue's case: a new [[station]] ICS1 on reload. The running configuration is kept:
    the duty station ICS1 still gets CJIS and CORI, and the journal says why."""
    from msc.journal.search import Query, search
    from msc.keyring import KeyRing

    await harness.start_stub()
    sw = await harness.start_switch()
    await harness.wait_upstream()
    cfg = tmp_path / "msc.toml"
    cfg.write_text(cfg.read_text() + STATION.format(m="ICS1").replace('["cjis"]', '["dmv"]'))
    assert await sw.reload() is False
    assert "station[5].mnemonic" in sw.last_reload_error
    c = await harness.operator("ICS1", "TS0001")
    for text in ("ICS1A.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101",
                 "ICS1B.QH.CA0130000.NAM/DOE, JOHN.DOB/19800101.PUR/C.ATN/DET SMITH"):
        f = await c.send(text)
        assert f.type == "A", f
    s = sw.settings
    await harness.stop()
    ring = KeyRing(s.data_dir / "keys", s.key_file)
    texts = [r.text for r in search(s.journal_dir, ring, Query(kind="ADMIN"))]
    assert any(t.startswith("CONFIG RELOAD FAILED") for t in texts), texts
